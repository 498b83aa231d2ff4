# certctl: the remote clock and the connector-command runner shared by combined scripts.
# Functions only: sourcing this changes nothing in the environment connector commands see.

# certctl_t NAME prints `\036T NAME SECONDS` (bash's EPOCHREALTIME, else date), so steps that
# share one remote command still get their own durations.
certctl_t() { t=${EPOCHREALTIME:-}; [ -n "$t" ] || t=$(date +%s.%N 2>/dev/null) || t=-; printf '\036T %s %s\n' "$1" "$t"; }

# certctl_run PHASE INDEX CMD... runs one connector command. A `\036C PHASE INDEX` line on
# stdout and on stderr marks where its output starts; if it fails, the script stops after a
# `\036X PHASE INDEX STATUS` line carrying the command's exit status.
certctl_run() {
  p=$1; i=$2; shift 2
  printf '\036C %s %s\n' "$p" "$i"; printf '\036C %s %s\n' "$p" "$i" >&2
  "$@"; s=$?
  [ "$s" = 0 ] || { certctl_t failed; printf '\036X %s %s %s\n' "$p" "$i" "$s"; exit "$s"; }
}

# certctl_run_tolerated PHASE INDEX CMD... is certctl_run for a live-configuration test run
# while live files are missing or broken (a repair): a failure is marked `\036A PHASE INDEX
# STATUS` (attributed to those files) and the script goes on.
certctl_run_tolerated() {
  p=$1; i=$2; shift 2
  printf '\036C %s %s\n' "$p" "$i"; printf '\036C %s %s\n' "$p" "$i" >&2
  "$@"; s=$?
  [ "$s" = 0 ] || printf '\036A %s %s %s\n' "$p" "$i" "$s"
}
