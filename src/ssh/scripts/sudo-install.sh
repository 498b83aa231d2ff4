# certctl, `become: sudo`: installs the login user's uploaded copy as root.
# $1 the copy in the private staging directory, $2 the destination, $3 the octal mode,
# $4 `uid:gid` or empty. The destination is created exclusively (noclobber: O_EXCL) under
# umask 077, gets its owner and mode, and only then its content; the copy is removed.
set -u
src=$1 dst=$2 mode=$3 owner=$4
fail() { rm -f -- "$src"; printf '%s\n' "$1" >&2; exit 1; }
undo() { rm -f -- "$dst"; fail "$1"; }
[ -f "$src" ] || fail "the uploaded copy $src is missing"
(umask 077 && set -C && : > "$dst") 2>/dev/null || fail "cannot create $dst (does it exist already?)"
if [ -n "$owner" ]; then chown -- "$owner" "$dst" || undo "cannot set owner $owner on $dst"; fi
chmod -- "$mode" "$dst" || undo "cannot set mode $mode on $dst"
cat -- "$src" >> "$dst" || undo "cannot write $dst"
sync -- "$dst" 2>/dev/null || sync
rm -f -- "$src"
