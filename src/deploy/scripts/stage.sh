# certctl: stage — every file the preview needs written on the target from this command's
# standard input, in the same remote command as the preview: one line of base64 per file, in
# the order of the calls. Private content travels only on stdin, never on a command line.
# Each file is created exclusively (an existing name, a planted symlink, is refused) under the
# umask that gives its final mode from the first byte, given its owner while still empty, then
# filled; all are fsync'd together. `S PATH …` lines name what failed, and set `fail`.

# certctl_put PATH UMASK OWNER (uid:gid, or `-`)
certctl_put() {
  l=; IFS= read -r l || [ -n "$l" ] || { fail=1; printf 'S %s: no data on stdin\n' "$1"; return 0; }
  if ! e=$( (umask "$2" && set -C && : > "$1") 2>&1 ); then
    fail=1; printf 'S %s: cannot be created (%s)\n' "$1" "$(printf '%s' "$e" | head -n 1)"; return 0
  fi
  if [ "$3" != - ] && ! e=$(chown -- "$3" "$1" 2>&1); then
    rm -f -- "$1"; fail=1; printf 'S %s: cannot be given to %s (%s)\n' "$1" "$3" "$e"; return 0
  fi
  if ! e=$( { printf '%s' "$l" | base64 -d >> "$1"; } 2>&1 ); then
    rm -f -- "$1"; fail=1; printf 'S %s: cannot be written (%s)\n' "$1" "$(printf '%s' "$e" | head -n 1)"
  fi
  l=
}

# certctl_staged PATH...: the staged files fsync'd; the stage ends here, or the script does.
certctl_staged() {
  if [ "$fail" = 0 ]; then certctl_sync "$@" || :; certctl_t stage; return 0; fi
  certctl_t failed; printf '\036X stage 0 1\n'; exit 1
}
