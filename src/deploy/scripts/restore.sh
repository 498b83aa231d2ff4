# certctl: restoring a backup set (a rollback, `certctl rollback`, a recovery) as a whole. Every
# copy is first put beside its live file under a temp name; only when all are there are they
# renamed over the live files (files that did not exist before removed, symlinks put back as
# they were). A failed copy removes the temps and leaves the live files as they were, so a
# restore never mixes old and new. `$fail` says whether it all worked; `R PATH failed` lines
# name what did not. A file that already holds its copy is left alone.

# certctl_copy COPY TEMP WRITE
certctl_copy() {
  if [ -f "$3" ] && [ ! -L "$3" ] && cmp -s -- "$1" "$3"; then printf 'R %s same\n' "$3"; return 0; fi
  rm -f -- "$2"; cp -p -- "$1" "$2" || { fail=1; printf 'R %s failed\n' "$3"; }
}
# certctl_sync_made TEMP... fsyncs the copies certctl_copy made (it makes none for a file
# that already holds its copy) in ONE `sync`, before any is renamed over a live file: a crash
# of the machine never leaves a live file renamed from a copy whose bytes were not written.
# certctl_place TEMP WRITE (nothing to do when certctl_copy found the file already right)
certctl_sync_made() {
  for p; do shift; if [ -f "$p" ]; then set -- "$@" "$p"; fi; done
  [ $# -eq 0 ] || certctl_sync "$@"
}
certctl_place() { [ -e "$1" ] || return 0; mv -f -- "$1" "$2" || { fail=1; rm -f -- "$1"; printf 'R %s failed\n' "$2"; }; }
certctl_remove() { rm -f -- "$1" || { fail=1; printf 'R %s failed\n' "$1"; }; }
# certctl_relink PATH TEXT TEMP makes PATH the symlink TEXT again (atomically) unless it is.
certctl_relink() {
  if [ -L "$1" ] && [ "$(readlink -- "$1")" = "$2" ]; then return 0; fi
  rm -f -- "$3"; { ln -s -- "$2" "$3" && mv -f -- "$3" "$1"; } || { fail=1; rm -f -- "$3"; printf 'R %s failed\n' "$1"; }
}
certctl_discard() { rm -f -- "$@"; printf 'R nothing restored: a copy failed, the live files were left as they were\n'; }

# certctl_check IDX PATH prints what PATH is now, for the controller to compare with the set:
# `C IDX SHA256` (its content, a symlink followed) or `C IDX absent`, and `L IDX TEXT<RS>` when
# it is a symlink.
certctl_check() {
  if [ -L "$2" ]; then printf 'L %s %s\036\n' "$1" "$(readlink -- "$2")"; fi
  if [ -f "$2" ]; then
    h=$(sha256sum < "$2") && printf 'C %s %s\n' "$1" "${h%% *}" || printf 'C %s unreadable\n' "$1"
  else
    printf 'C %s absent\n' "$1"
  fi
}
