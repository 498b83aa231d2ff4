# certctl: writing new content into a live file's own inode, for a file bind-mounted into
# another mount namespace (a container), which never sees a file renamed over the live path.
# Used by the swap (the staged file written into the live one) and by a restore (the backup
# copy written back the same way). Runs under the swap's or restore's trap: it finishes even
# when the controller is killed; the backup set and the journal exist before it starts.

# certctl_into FROM TO IDENT writes FROM's bytes into TO's inode, with FROM's mode and owner:
# - TO must still be the regular file inspect saw (IDENT is `DEV INO`; `-` skips the check),
#   never a symlink, so the write goes nowhere else;
# - the mode is first narrowed to what the old and the new mode both allow, so neither the
#   old content nor the new is ever more readable than its own mode (a key is never
#   world-readable); then the owner is given;
# - the bytes are written over the old ones from the start, without truncating first (a write
#   that fails part-way leaves the rest of the old bytes, never an empty file), the file is cut
#   to FROM's length and fsync'd, its final mode set, and the result compared with FROM.
# Returns non-zero, saying why on stderr, at the first failure.
certctl_into() {
  if [ -L "$2" ] || [ ! -f "$2" ]; then printf 'certctl: %s is no longer a regular file\n' "$2" >&2; return 1; fi
  if [ "$3" != - ] && [ "$(stat -c '%d %i' -- "$2" 2>/dev/null)" != "$3" ]; then
    printf 'certctl: %s is not the file inspect saw (another inode): not written into\n' "$2" >&2; return 1
  fi
  from_st=$(stat -c '%a %u:%g' -- "$1") && to_st=$(stat -c '%a %u:%g' -- "$2") || return
  if [ "${from_st% *}" != "${to_st% *}" ]; then
    chmod -- "$(printf '%o' $((0${from_st% *} & 0${to_st% *})))" "$2" || return
  fi
  if [ "${from_st#* }" != "${to_st#* }" ]; then chown -- "${from_st#* }" "$2" || return; fi
  n=$(wc -c < "$1") && n=$((n)) || return
  cat -- "$1" 1<> "$2" || return
  truncate -s "$n" -- "$2" || return
  certctl_sync "$2"
  if [ "${from_st% *}" != "${to_st% *}" ]; then chmod -- "${from_st% *}" "$2" || return; fi
  cmp -s -- "$1" "$2" || { printf 'certctl: %s does not hold what was written into it\n' "$2" >&2; return 1; }
}

# certctl_write_in FROM TO IDX IDENT — the swap's in-place write of file IDX (instead of
# certctl_rename); the staged file FROM is removed once written.
certctl_write_in() {
  certctl_into "$1" "$2" "$4" || { s=$?; printf '\036X swap %s %s\n' "$3" "$s"; exit "$s"; }
  rm -f -- "$1"
}

# certctl_place_in TEMP WRITE — a restore's in-place write of a backup copy (placed beside the
# live file by certctl_copy); a file that no longer exists is put back by a rename.
certctl_place_in() {
  [ -e "$1" ] || return 0
  if [ ! -e "$2" ] && [ ! -L "$2" ]; then certctl_place "$1" "$2"; return; fi
  if certctl_into "$1" "$2" -; then rm -f -- "$1"; else fail=1; rm -f -- "$1"; printf 'R %s failed\n' "$2"; fi
}
