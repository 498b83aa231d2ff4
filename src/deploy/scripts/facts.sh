# certctl: facts for `certctl status`. certctl_fact CMD... prints the first line of a command's
# output, stdout and stderr (`nginx -v` writes to stderr).
certctl_fact() { printf 'X %s\n' "$("$@" 2>&1 | head -n 1)"; }
