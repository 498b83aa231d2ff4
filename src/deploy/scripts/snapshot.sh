# certctl: `swap: commands` snapshots. certctl_save FILE CMD... runs CMD with its stdout in FILE
# (created 0600: umask 077). certctl_saved FILE NAME prints `S NAME` when FILE is non-empty.
certctl_save() { f=$1; shift; "$@" > "$f" || { rc=$?; printf 'snapshot %s failed\n' "$f" >&2; exit "$rc"; }; }
certctl_saved() { if [ -s "$1" ]; then printf 'S %s\n' "$2"; fi; }
