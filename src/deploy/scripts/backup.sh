# certctl: the backup set — a private copy of every live file about to be replaced, checked
# against what inspect hashed, fsync'd — then the journal, then old sets pruned.

# certctl_set DIR makes the run's backup set (0700; it must not exist yet).
certctl_set() { mkdir -m 0700 -- "$1" || { fail=1; printf 'B the backup set %s could not be made\n' "$1"; }; }

# certctl_backup FROM TO copies a live file into the set (mode, owner and times kept).
# certctl_backup_all SET FROM... copies them all in ONE `cp`, each keeping its name.
certctl_backup() { cp -p -- "$1" "$2" || { fail=1; printf 'B %s failed\n' "$1"; }; }
certctl_backup_all() {
  d=$1; shift
  [ "${fail:-0}" = 0 ] || return 0
  cp -p -- "$@" "$d/" || { fail=1; printf 'B the copies into %s failed\n' "$d"; }
}

# certctl_backup_check SET (NAME SHA256)... hashes the copies in ONE sha256sum and checks each
# is what inspect saw (a file changed in between fails the backup rather than keep a wrong
# copy). certctl_journal_write fsyncs them.
certctl_backup_check() {
  d=$1; shift
  [ $# -gt 0 ] || return 0
  o=$(cd -- "$d" && sha256sum -- *) || { fail=1; printf 'B the copies in %s could not be hashed\n' "$d"; return 0; }
  nl='
'
  while [ $# -ge 2 ]; do
    # A whole line: one copy's name is never taken for the end of another's.
    case "$nl$o$nl" in *"$nl$2  $1$nl"*) ;; *) fail=1; printf 'B %s changed between inspect and backup\n' "$1" ;; esac
    shift 2
  done
}

# A backup set is a directory named `DIGITS-HEX` (`.restored` once used or retired); the
# shell's own glob lists them oldest first (the run id starts with the time).
certctl_is_set() {
  s=${1%.restored}
  case $s in [0-9]*-?*) ;; *) return 1 ;; esac
  case ${s%%-*} in *[!0-9]*) return 1 ;; esac
  case ${s#*-} in *[!0-9a-f]*) return 1 ;; esac
}

# certctl_prune DIR KEEP removes all but the newest KEEP sets.
certctl_prune() {
  n=0
  for d in "$1"/*; do certctl_is_set "${d##*/}" && n=$((n + 1)); done
  for d in "$1"/*; do
    [ "$n" -gt "$2" ] || return 0
    certctl_is_set "${d##*/}" || continue
    rm -rf -- "$d"; n=$((n - 1))
  done
}
