# certctl: the target's lock (a directory beside the backups), the sweep of what a killed run
# left, and the active journal shown to the run that takes (or is refused) the lock.

# certctl_trust DIR prints what the controller needs to decide whether DIR and each directory
# above it up to / can be trusted with backups: `TE 1|0` for each (whether it exists, DIR
# first), `TU UID` (the login user: sudo's SUDO_UID, else our own, as certctl_ids reads it),
# then ONE stat of those that exist, in the same order (`TS OWNER MODE`).
certctl_trust() {
  d=$1; set --
  while :; do
    if [ -e "$d" ]; then printf 'TE 1\n'; set -- "$@" "$d"; else printf 'TE 0\n'; fi
    [ "$d" = / ] && break
    d=${d%/*}; [ -n "$d" ] || d=/
  done
  certctl_ids
  printf 'TU %s\n' "${SUDO_UID:-${certctl_euid:-$(id -u)}}"
  [ $# -eq 0 ] || stat -L -c 'TS %u %a' -- "$@"
}

# certctl_dirs DIR makes the backup directory (0700) unless it exists.
certctl_dirs() { [ -d "$1" ] || mkdir -p -m 0700 -- "$1"; }

# certctl_lock LOCKDIR HOLDER takes the lock with an atomic mkdir, then writes the holder line
# to a temp file renamed into place, so a holder is never empty or partial. Prints LOCKED; or
# HELD and the holder's line; or FAILED and why (the lock directory could not be made, or the
# holder could not be written: then the lock is given back at once).
certctl_lock() {
  if e=$(mkdir -m 0700 -- "$1" 2>&1); then
    if e=$( { printf '%s\n' "$2" > "$1/holder.tmp" && mv -f -- "$1/holder.tmp" "$1/holder"; } 2>&1 ); then
      locked=1; echo LOCKED
    else
      rm -rf -- "$1"
      printf 'FAILED could not write the holder file in %s (%s); the lock was given back\n' "$1" "$(printf '%s' "$e" | head -n 1)"
    fi
  elif [ -d "$1" ]; then
    h=; { IFS= read -r h < "$1/holder"; } 2>/dev/null
    printf 'HELD %s\n' "$h"
  else
    printf 'FAILED could not make the lock directory %s (%s)\n' "$1" "$(printf '%s' "$e" | head -n 1)"
  fi
}

# certctl_break LOCKDIR HOLDER removes a lock only if its holder line is still HOLDER (the one
# the controller saw and judged breakable): BROKEN, CHANGED (someone else's now) or NOLOCK.
certctl_break() {
  [ -d "$1" ] || { echo NOLOCK; return 0; }
  h=; { IFS= read -r h < "$1/holder"; } 2>/dev/null
  if [ "$h" = "$2" ]; then rm -rf -- "$1" && echo BROKEN; else printf 'CHANGED %s\n' "$h"; fi
}

# certctl_stale DIR NAME removes (and prints, STALE) temp files of the live file DIR/NAME
# (`.NAME.certctl-*`, regular files only; the name is compared as a literal, never a glob) once
# this run holds the lock. The shell lists the directory itself: no process unless there is
# something to remove.
certctl_stale() {
  [ "${locked:-0}" = 1 ] || return 0
  for f in "$1"/.*; do
    case ${f##*/} in ".$2.certctl-"*) ;; *) continue ;; esac
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    rm -f -- "$f" && printf 'STALE %s\n' "$f"
  done
}

# certctl_stale_scratch TMPDIR LOCKDIR OURS removes (SCRATCH) scratch directories in TMPDIR
# tagged with this target's lock (`.certctl-lock`) other than this run's: once we hold the
# lock, the run that made one cannot be running on this target. Untagged ones are kept.
certctl_stale_scratch() {
  [ "${locked:-0}" = 1 ] || return 0
  for d in "$1"/certctl-*; do
    [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && [ "$d" != "$3" ] || continue
    l=; { IFS= read -r l < "$d/.certctl-lock"; } 2>/dev/null
    [ "$l" = "$2" ] || continue
    rm -rf -- "$d" && printf 'SCRATCH %s\n' "$d"
  done
}

# certctl_journal_show BACKUPDIR prints the active journal (an interrupted run's record of a
# change it had started), framed: `\036JOURNAL` then its text then `\036END`.
certctl_journal_show() {
  [ -f "$1/journal" ] || return 0
  printf '\036JOURNAL\n'; cat -- "$1/journal" 2>/dev/null; printf '\036END\n'
}

# certctl_unlock LOCKDIR RUN removes the lock only if its holder names run RUN: RELEASED,
# NOTOURS (another run's, or no holder) or NOLOCK. certctl_owner LOCKDIR RUN prints OURS, or
# OTHER and the holder line.
certctl_unlock() {
  [ -d "$1" ] || { echo NOLOCK; return 0; }
  h=; { IFS= read -r h < "$1/holder"; } 2>/dev/null
  case " $h " in
    *" run=$2 "*) rm -rf -- "$1" && echo RELEASED ;;
    *) echo NOTOURS ;;
  esac
}
certctl_owner() {
  h=; { IFS= read -r h < "$1/holder"; } 2>/dev/null
  case " $h " in
    *" run=$2 "*) echo OURS ;;
    *) printf 'OTHER %s\n' "${h:-no lock held}" ;;
  esac
}
