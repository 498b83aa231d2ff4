# certctl: the per-target journal. Before the first live change a run records its intent in
# BACKUPDIR/journal (written, fsync'd, renamed into place); remote scripts append progress lines
# to it (fsync'd); cleanup closes it into the backup set. A journal still there when the next
# run takes the lock is an interrupted change, which that run repairs first.

# certctl_sync PATH... fsyncs files and directories (GNU and busybox `sync FILE`); where `sync`
# takes no operands, everything is synced.
certctl_sync() { sync -- "$@" 2>/dev/null || sync; }

# certctl_journal_write BACKUPDIR TEXT writes the intent (one line) as the active journal, once
# everything before it in the script worked (`$fail` is 0).
certctl_journal_write() {
  [ "${fail:-0}" = 0 ] || return 0
  { printf '%s\n' "$2" > "$1/journal.tmp"; } 2>/dev/null && certctl_sync "$1/journal.tmp" &&
    mv -f -- "$1/journal.tmp" "$1/journal" && certctl_sync "$1" ||
    { fail=1; rm -f -- "$1/journal.tmp"; printf 'B the journal %s could not be written\n' "$1/journal"; }
}

# certctl_mark BACKUPDIR PHASE appends a progress line to the active journal (fsync'd). Best
# effort: a recovery restores from the backup set whatever the last phase says.
certctl_mark() { { printf '%s\n' "$2" >> "$1/journal"; } 2>/dev/null && certctl_sync "$1/journal"; }

# certctl_busy BACKUPDIR records this shell's PID while it changes live files (removed on exit),
# so a run recovering from a killed controller waits for the change still under way.
certctl_busy() { certctl_busy_file=$1/journal.busy; printf '%s\n' "$$" > "$certctl_busy_file" 2>/dev/null; trap 'rm -f -- "$certctl_busy_file"' EXIT; }

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
