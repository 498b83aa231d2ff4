# certctl, `become: sudo`: renames $1 over $2 as root (same directory, so rename(2) is
# atomic); refuses a directory at $2, which `mv` would move into.
if [ -d "$2" ] && [ ! -L "$2" ]; then printf '%s is a directory\n' "$2" >&2; exit 1; fi
exec mv -f -- "$1" "$2"
