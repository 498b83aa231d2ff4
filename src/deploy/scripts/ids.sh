# certctl: the effective user and group ids, read by the shell itself from /proc/self/status
# (no process): certctl_ids sets certctl_euid and certctl_egid, each empty where it cannot
# tell (no /proc: the callers then run `id`, or `chown` whatever the file's owner).
certctl_ids() {
  certctl_euid= certctl_egid=
  [ -r /proc/self/status ] || return 0
  while IFS= read -r l; do
    case $l in
      Uid:*) set -- ${l#Uid:}; certctl_euid=${2-} ;;
      Gid:*) set -- ${l#Gid:}; certctl_egid=${2-} ;;
    esac
  done 2>/dev/null < /proc/self/status
  case $certctl_euid in '' | *[!0-9]*) certctl_euid= ;; esac
  case $certctl_egid in '' | *[!0-9]*) certctl_egid= ;; esac
}
