# certctl: inspect — what each live file is (a file, a symlink and what it resolves to, missing,
# something else), its hash and stat, the private key's public half where the key differs from
# the new one, owner names resolved, and the private scratch directory. Every runtime value
# reaches these functions as a quoted argument.
#
# Output records (IDX is the file's index in the plan):
#   F IDX file|absent|notfile|link|unresolved   what the path is (`link`: a symlink that is
#                                                replaced, not followed)
#   D IDX                                        the directory the file goes in does not exist
#   L IDX TEXT<RS>                               the path is a symlink; TEXT is what it points to
#   W IDX PATH<RS>                               a followed symlink resolves to PATH (written)
#   \036H STATUS, sha256sum's output; \036S STATUS, stat's output (one process each, for all)
#   STALE PATH                                   a temp file a killed run left, removed
#   \036K, then P IDX key PEM<RS>                a key-bearing file whose hash is not the new
#                                                key's: the public key openssl reads from it
#                                                (`-` when openssl cannot load it)
# <RS> is \036 then a newline: TEXT and PATH may hold newlines.

certctl_nl='
'

# certctl_files (IDX FOLLOW CHECK PATH)... — CHECK: `-`, or `k:SHA256` for a file that holds a
# private key (a key, a bundle), with the new content's hash.
certctl_files() {
  c=$#
  while [ "$c" -gt 0 ]; do
    i=$1 follow=$2 p=$4 real=$4
    shift 4; c=$((c - 4))
    if [ -L "$p" ]; then
      printf 'L %s %s\036\n' "$i" "$(readlink -- "$p")"
      if [ "$follow" != 1 ]; then printf 'F %s link\n' "$i"; continue; fi
      if ! real=$(readlink -f -- "$p") || [ -z "$real" ]; then printf 'F %s unresolved\n' "$i"; continue; fi
      if [ "$real" != "$p" ]; then
        printf 'W %s %s\036\n' "$i" "$real"
        # What a killed run left beside the file the link resolves to (lock.sh, with the lock).
        ! command -v certctl_stale >/dev/null 2>&1 || certctl_stale "${real%/*}" "${real##*/}"
      fi
    fi
    eval "certctl_real_$i=\$real"
    if [ -f "$real" ]; then
      printf 'F %s file\n' "$i"; set -- "$@" "$real"
    elif [ -e "$real" ] || [ -L "$real" ]; then
      printf 'F %s notfile\n' "$i"
    else
      d=${real%/*}; [ -d "${d:-/}" ] || printf 'D %s\n' "$i"
      printf 'F %s absent\n' "$i"
    fi
  done
  [ $# -gt 0 ] || return 0
  o=$(sha256sum -- "$@"); s=$?
  printf '\036H %s\n%s\n' "$s" "$o"
  certctl_hashes=$o
  o=$(stat -L -c '%a %u %g %C' -- "$@" 2>/dev/null); s=$?
  printf '\036S %s\n%s\n' "$s" "$o"
}

# certctl_reads (IDX FOLLOW CHECK PATH)... — the same arguments, after certctl_files: for each
# regular file whose hash is not the new content's, what it holds that the controller needs
# to judge it: the certificates of a certificate file or a bundle (`R IDX PEM<RS>`, only the
# CERTIFICATE blocks: never a key), and the public key openssl reads from a key or a bundle
# (`P IDX key PEM<RS>`, `-` when it cannot), so a key that does not match its certificate is
# seen. Nothing runs for a file that already holds the new content. CHECK is `c:`, `k:` or
# `b:` (certificate file, key, bundle) and the new content's SHA-256.
certctl_reads() {
  printf '\036K\n'
  command -v openssl >/dev/null 2>&1 && ssl=1 || ssl=0
  while [ $# -ge 4 ]; do
    i=$1 check=$3
    shift 4
    case $check in [ckb]:*) ;; *) continue ;; esac
    eval "r=\${certctl_real_$i-}"
    [ -n "$r" ] && [ -f "$r" ] || continue
    case ${certctl_hashes-} in *"${check#?:}  $r"*) continue ;; esac
    case $check in [cb]:*)
      certctl_certs "$r"
      printf 'R %s %s\036\n' "$i" "$c" ;;
    esac
    case $check in [kb]:*)
      [ "$ssl" = 1 ] || continue
      k=$(openssl pkey -in "$r" -pubout -passin pass: 2>/dev/null) || k=-
      printf 'P %s key %s\036\n' "$i" "${k:--}" ;;
    esac
  done
}

# certctl_certs FILE sets c to the file's CERTIFICATE blocks (what `sed -n '/^-----BEGIN
# CERTIFICATE-----/,/^-----END CERTIFICATE-----/p'` prints, without the last newline): read by
# the shell itself, no process, for a file of up to 2,000 lines (a certificate file has tens);
# a longer one is left to sed.
certctl_certs() {
  c= b=0 n=0
  while IFS= read -r l || [ -n "$l" ]; do
    n=$((n + 1))
    if [ "$n" -gt 2000 ]; then
      c=$(sed -n '/^-----BEGIN CERTIFICATE-----/,/^-----END CERTIFICATE-----/p' -- "$1" 2>/dev/null)
      return 0
    fi
    case $l in "-----BEGIN CERTIFICATE-----"*) b=1 ;; esac
    [ "$b" = 0 ] || c="$c$l$certctl_nl"
    case $l in "-----END CERTIFICATE-----"*) b=0 ;; esac
  done 2>/dev/null < "$1"
  c=${c%"$certctl_nl"}
}

certctl_uid() { u=$(id -u -- "$1" 2>/dev/null) || u=-; printf 'U %s %s\n' "$2" "$u"; }
certctl_gid() { g=$(getent group -- "$1" | cut -d: -f3); printf 'G %s %s\n' "$2" "${g:--}"; }
certctl_if_new() { f=$1; shift; [ -e "$f" ] || "$@"; }

# certctl_scratch DIR TAG [SUBDIR...] makes the private scratch directory, tagged with the
# target's lock so a later run holding that lock can sweep it if this run is killed (best
# effort), and inside it each further certificate's directory.
certctl_scratch() {
  mkdir -m 0700 -- "$1" || return
  { printf '%s\n' "$2" > "$1/.certctl-lock"; } 2>/dev/null || :
  shift 2
  for sub in "$@"; do mkdir -m 0700 -- "$sub" || return; done
}
