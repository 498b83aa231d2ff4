# certctl: the per-target journal. Before the first live change a run records its intent in
# BACKUPDIR/journal (written, fsync'd, renamed into place); remote scripts append progress lines
# to it (fsync'd); cleanup closes it into the backup set. A journal still there when the next
# run takes the lock is an interrupted change, which that run repairs first.

# certctl_sync PATH... fsyncs files and directories (GNU and busybox `sync FILE`); where `sync`
# takes no operands, everything is synced.
certctl_sync() { sync -- "$@" 2>/dev/null || sync; }

# certctl_journal_write BACKUPDIR TEXT [PATH...] writes the intent (one line) as the active
# journal, once everything before it in the script worked (`$fail` is 0): the temp file
# fsync'd in ONE `sync` with PATH... (the backup copies, their set, the staged files), renamed
# into place, the directory fsync'd.
certctl_journal_write() {
  [ "${fail:-0}" = 0 ] || return 0
  j=$1; shift
  { printf '%s\n' "$1" > "$j/journal.tmp"; } 2>/dev/null && shift && certctl_sync "$j/journal.tmp" "$@" &&
    mv -f -- "$j/journal.tmp" "$j/journal" && certctl_sync "$j" ||
    { fail=1; rm -f -- "$j/journal.tmp"; printf 'B the journal %s could not be written\n' "$j/journal"; }
}

# certctl_mark BACKUPDIR PHASE appends a progress line to the active journal. Not fsync'd: a
# killed process or a dropped connection keeps what it wrote; after a crash of the machine a
# lost line costs nothing, since a recovery checks every file by its hash whatever the last
# phase says. certctl_mark_synced BACKUPDIR PHASE PATH... appends it, then fsyncs the journal
# and PATH... (the directories of the renames before it) in ONE `sync`.
certctl_mark() { { printf '%s\n' "$2" >> "$1/journal"; } 2>/dev/null; }
certctl_mark_synced() {
  j=$1; certctl_mark "$1" "$2"; shift 2
  certctl_sync "$j/journal" "$@"
}

# certctl_busy BACKUPDIR records this shell's PID while it changes live files (emptied on exit
# by the shell itself: no process; the cleanup removes the file with the lock), so a run
# recovering from a killed controller waits for the change still under way.
certctl_busy() { certctl_busy_file=$1/journal.busy; printf '%s\n' "$$" > "$certctl_busy_file" 2>/dev/null; trap '{ :; } 2>/dev/null > "$certctl_busy_file"' EXIT; }

# certctl_wait_idle BACKUPDIR waits (up to 45 s) for a script named by journal.busy that is
# still running; prints `WAITED PID` when it had to.
certctl_wait_idle() {
  b=; { IFS= read -r b < "$1/journal.busy"; } 2>/dev/null
  case $b in ''|*[!0-9]*) return 0 ;; esac
  n=0
  while kill -0 "$b" 2>/dev/null && [ "$n" -lt 450 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n + 1)); done
  [ "$n" = 0 ] || printf 'WAITED %s\n' "$b"
  rm -f -- "$1/journal.busy"
}

# certctl_journal_close BACKUPDIR RUN OUTCOME DEST RETIRE closes the active journal if it is run
# RUN's: appends `closed OUTCOME` and moves it to DEST (inside its backup set); RETIRE (a set
# directory, or `-`) is then renamed SET.restored, so `certctl rollback` passes over a set that
# holds what is live now. Prints CLOSED, or nothing when there is no such journal.
certctl_journal_close() {
  [ -f "$1/journal" ] || return 0
  l=; { IFS= read -r l < "$1/journal"; } 2>/dev/null
  case $l in *"\"run\":\"$2\""*) ;; *) return 0 ;; esac
  { printf 'closed %s\n' "$3" >> "$1/journal"; } 2>/dev/null
  if mv -f -- "$1/journal" "$4" 2>/dev/null || rm -f -- "$1/journal"; then echo CLOSED; else fail=1; printf 'R %s failed\n' "$1/journal"; fi
  if [ "$5" != - ] && [ -d "$5" ]; then mv -- "$5" "$5.restored" 2>/dev/null || :; fi
  certctl_sync "$1"
}
