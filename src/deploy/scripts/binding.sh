# certctl: the binding check's remote half (docs/connectors.md#the-binding-check): what the
# server's own view of its configuration says, for the controller to judge. Runs inside
# inspect's remote command, after inspect (no round trip of its own), and read-only. Every
# runtime value reaches these functions as a quoted argument.
#
# Every value is printed base64-encoded in one word, so nothing a configuration holds can be
# taken for a record (`-` is an empty value):
#   \036B S                                      the check ran
#   \036B N WHY                                  nothing can be asked (WHY: a word)
#   \036B P B64(PATH) B64(REAL)|-                PATH resolved (readlink -f); `-`: it cannot be
#   \036B Q G J STATUS SIZE B64(OUT) B64(ERR)    group G's command J: its exit status, the size
#                                                of its stdout, its stdout (cut to what is left
#                                                of the budget) and, when it failed, the head
#                                                of its stderr
#   \036B F G KIND OK SIZE B64(PATH) B64(TEXT)   a file read for group G (KIND: cfg or list; OK:
#                                                1, or 0 when it cannot be read)
# The budget (bytes over every output) keeps the whole command's output well under what the
# controller keeps of it.

certctl_bind_b64() { base64 | tr -d '\n'; }

# certctl_bind_init BUDGET: checks the one tool needed beyond POSIX; without it the other
# functions do nothing.
certctl_bind_init() {
  cb_left=$1 cb_ok=1 cb_out= cb_cfgs= cb_c=
  printf '\036B S\n'
  command -v base64 >/dev/null 2>&1 || { cb_ok=0; printf '\036B N base64\n'; }
}

# certctl_bind_cut VALUE sets cb_n (VALUE's size in bytes) and cb_v (VALUE cut to the budget,
# in base64; `-` when empty), and spends the budget.
certctl_bind_cut() {
  cb_n=$(( $(printf '%s' "$1" | wc -c) ))
  cb_v=$(printf '%s' "$1" | head -c "$cb_left" | certctl_bind_b64)
  [ -n "$cb_v" ] || cb_v=-
  if [ "$cb_n" -lt "$cb_left" ]; then cb_left=$((cb_left - cb_n)); else cb_left=0; fi
}

# certctl_bind_real PATH...: what each path resolves to.
certctl_bind_real() {
  [ "$cb_ok" = 1 ] || return 0
  for cb_p in "$@"; do
    if cb_r=$(readlink -f -- "$cb_p" 2>/dev/null) && [ -n "$cb_r" ]; then
      cb_r=$(printf '%s' "$cb_r" | certctl_bind_b64)
    else
      cb_r=-
    fi
    printf '\036B P %s %s\n' "$(printf '%s' "$cb_p" | certctl_bind_b64)" "$cb_r"
  done
}

# certctl_bind_run G J CMD...: one of the connector's binding commands, stdin closed; its
# stdout is kept for certctl_bind_includes. When it fails it runs once more, for its stderr.
certctl_bind_run() {
  [ "$cb_ok" = 1 ] || return 0
  cb_g=$1 cb_j=$2; shift 2
  cb_out=$("$@" </dev/null 2>/dev/null); cb_s=$?
  cb_e=-
  if [ "$cb_s" != 0 ]; then
    cb_e=$("$@" </dev/null 2>&1 >/dev/null | head -c 2000 | certctl_bind_b64)
    [ -n "$cb_e" ] || cb_e=-
  fi
  certctl_bind_cut "$cb_out"
  printf '\036B Q %s %s %s %s %s %s\n' "$cb_g" "$cb_j" "$cb_s" "$cb_n" "$cb_v" "$cb_e"
}

# certctl_bind_file G KIND PATH: reads one file; its text stays in cb_c.
certctl_bind_file() {
  [ "$cb_ok" = 1 ] || return 0
  if cb_c=$(cat -- "$3" 2>/dev/null); then cb_k=1; else cb_k=0 cb_c=; fi
  certctl_bind_cut "$cb_c"
  printf '\036B F %s %s %s %s %s %s\n' "$1" "$2" "$cb_k" "$cb_n" \
    "$(printf '%s' "$3" | certctl_bind_b64)" "$cb_v"
}

# certctl_bind_cfg G PATH: a configuration file, or a directory's *.cfg files in order (as
# haproxy -f reads them); their text is kept for certctl_bind_crt_lists.
certctl_bind_cfg() {
  [ "$cb_ok" = 1 ] || return 0
  cb_cfgs=
  if [ -d "$2" ]; then
    for cb_f in "$2"/*.cfg; do
      [ -f "$cb_f" ] || continue
      certctl_bind_file "$1" cfg "$cb_f"
      cb_cfgs="$cb_cfgs$cb_c
"
    done
  else
    certctl_bind_file "$1" cfg "$2"
    cb_cfgs=$cb_c
  fi
}

# certctl_bind_includes G: the files apache's include list (the last command's `(N) PATH`
# lines) names that hold an SSLCertificate directive (one grep for all), each read.
certctl_bind_includes() {
  [ "$cb_ok" = 1 ] || return 0
  cb_l=$(printf '%s\n' "$cb_out" | sed -n 's/^[[:space:]]*([*0-9]*) //p')
  [ -n "$cb_l" ] || return 0
  cb_g=$1
  set --
  while IFS= read -r cb_f; do set -- "$@" "$cb_f"; done <<EOF
$cb_l
EOF
  cb_l=$(grep -l -i -e SSLCertificate -- "$@" 2>/dev/null)
  while IFS= read -r cb_f; do
    [ -z "$cb_f" ] || certctl_bind_file "$cb_g" cfg "$cb_f"
  done <<EOF
$cb_l
EOF
}

# certctl_bind_crt_lists G: the absolute crt-list files named on `bind` lines of the haproxy
# configuration read, each read once. A rough cut: the controller parses for real and asks
# again for any it missed (a name with a space, say).
certctl_bind_crt_lists() {
  [ "$cb_ok" = 1 ] || return 0
  cb_l=$(printf '%s\n' "$cb_cfgs" | awk '{
    sub(/#.*/, ""); if ($1 != "bind") next
    for (i = 2; i < NF; i++) if ($i == "crt-list") {
      t = $(i + 1); gsub(/^"|"$/, "", t)
      if (t ~ /^\// && !seen[t]++) print t
    }
  }')
  while IFS= read -r cb_f; do
    [ -z "$cb_f" ] || certctl_bind_file "$1" list "$cb_f"
  done <<EOF
$cb_l
EOF
}
