# certctl: `certctl rollback` — the newest backup set not yet restored (`SET NAME`), and the
# record of what it holds: its journal (framed `\036JOURNAL` … `\036END`), or the manifest of
# sets made before journals (`M` lines).
certctl_latest() {
  set_name=
  for d in "$1"/*; do
    n=${d##*/}
    case $n in *.restored) continue ;; esac
    certctl_is_set "$n" && [ -d "$d" ] || continue
    # Only sets this user made: one another user planted is named and passed over.
    if [ -O "$d" ]; then set_name=$n; else printf 'SKIP %s\n' "$n"; fi
  done
  [ -n "$set_name" ] || return 0
  printf 'SET %s\n' "$set_name"
  if [ -f "$1/$set_name/journal" ]; then
    printf '\036JOURNAL\n'; cat -- "$1/$set_name/journal"; printf '\036END\n'
  else
    sed 's/^/M /' -- "$1/$set_name/manifest" 2>/dev/null
  fi
}
