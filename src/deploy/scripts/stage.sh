# certctl: stage — every file the preview needs written on the target from this command's
# standard input, in the same remote command as the preview: per file, either its lines as
# they are (text: PEM, a config template) or one line of base64 (anything else), in the order
# of the calls. Private content travels only on stdin, never on a command line. Each file is
# created exclusively (an existing name, a planted symlink, is refused) under the umask that
# gives its final mode from the first byte, given its owner while still empty, then filled.
# `S PATH …` lines name what failed, and set `fail`. The staged files are fsync'd with the
# backup set, before the journal (a dry-run's never are: they are removed).
#
# The usual case runs no process per file: the shell creates the file and writes text
# itself, and `chown` runs only when the new file's owner is not already the one wanted.

# certctl_stage_init: the session's umask (the connector's commands run under it) and this
# shell's ids, once.
certctl_stage_init() { certctl_umask=$(umask); certctl_ids; }

# certctl_put PATH UMASK OWNER (uid:gid, or `-`) KIND (`b`: a base64 line; `tN`: N lines)
certctl_put() {
  if ! certctl_create "$1" "$2"; then certctl_skip "$4"; return 0; fi
  if [ "$3" != - ] && ! certctl_owned "$1" "$3" && ! e=$(chown -- "$3" "$1" 2>&1); then
    rm -f -- "$1"; fail=1; printf 'S %s: cannot be given to %s (%s)\n' "$1" "$3" "$e"
    certctl_skip "$4"; return 0
  fi
  case $4 in
    t*) certctl_text "$1" "${4#t}" ;;
    *) l=; IFS= read -r l || [ -n "$l" ] || { certctl_nodata "$1"; return 0; }
       if ! e=$( { printf '%s' "$l" | base64 -d >> "$1"; } 2>&1 ); then
         rm -f -- "$1"; fail=1; printf 'S %s: cannot be written (%s)\n' "$1" "$(printf '%s' "$e" | head -n 1)"
       fi
       l= ;;
  esac
}

# certctl_create PATH UMASK creates PATH empty and exclusively (set -C) under UMASK, in this
# shell; only a failure runs again in a subshell, for its message.
certctl_create() {
  umask "$2"; set -C
  # The redirection is the group's: one on `:` (a special built-in) that fails ends a POSIX
  # shell, not just the command.
  if { :; } 2>/dev/null > "$1"; then set +C; umask "$certctl_umask"; return 0; fi
  set +C; umask "$certctl_umask"
  e=$( (umask "$2" && set -C && : > "$1") 2>&1 )
  fail=1; printf 'S %s: cannot be created (%s)\n' "$1" "$(printf '%s' "$e" | head -n 1)"
  return 1
}

# certctl_owned PATH UID:GID: the new file already has that owner and group (it is this
# shell's user's and group's, and those are UID and GID).
certctl_owned() {
  [ -n "$certctl_euid" ] && [ -n "$certctl_egid" ] && [ "$2" = "$certctl_euid:$certctl_egid" ] &&
    [ -O "$1" ] && [ -G "$1" ]
}

# certctl_text PATH N appends the next N lines of stdin to PATH, each with its newline, in
# this shell (all N are read, whatever happens to the writes; a write's error is on stderr,
# which the controller shows with the `S` line).
certctl_text() {
  n=$2 w=0
  { while [ "$n" -gt 0 ] && IFS= read -r l; do [ "$w" = 1 ] || printf '%s\n' "$l" || w=1; n=$((n - 1)); done; } \
    >> "$1" || { w=1; certctl_skip "t$n"; n=0; }
  l=
  if [ "$w" = 1 ]; then rm -f -- "$1"; fail=1; printf 'S %s: cannot be written\n' "$1"
  elif [ "$n" != 0 ]; then rm -f -- "$1"; fail=1; printf 'S %s: no data on stdin\n' "$1"; fi
}

# certctl_skip KIND reads past a file's data on stdin (it was not written).
certctl_skip() {
  case $1 in
    t*) n=${1#t}; while [ "$n" -gt 0 ] && IFS= read -r l; do n=$((n - 1)); done ;;
    *) IFS= read -r l || : ;;
  esac
  l=
}

certctl_nodata() { rm -f -- "$1"; fail=1; printf 'S %s: no data on stdin\n' "$1"; }

# certctl_staged: the stage ends here, or the script does.
certctl_staged() {
  if [ "$fail" = 0 ]; then certctl_t stage; return 0; fi
  certctl_t failed; printf '\036X stage 0 1\n'; exit 1
}
