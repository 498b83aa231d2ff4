# certctl: bind mounts of live files. A container that bind-mounts a single file keeps the
# inode it was given: a file renamed over the live path on the host is never seen inside it
# (moby#22627). For each live regular file, this finds the mounts whose root is that file, in
# every mount namespace this user can read (`/proc/*/mountinfo`; one process per namespace is
# read when `stat -L` of `/proc/PID/ns/mnt` can tell them apart). Part of the inspect script,
# after certctl_files.
#
# Output records, after a `\036M` line (IDX is the file's index in the plan):
#   N IDX DEV INO               the live file's device and inode numbers (as `stat` prints
#                               them): the swap checks it is still that file before writing
#   M IDX MOUNTID PID WHERE COMM  a mount of that file: its id, a process that sees it, its
#                               mount point as mountinfo writes it (`\040` for a space, …), and
#                               that process's name (the rest of the line)

# The finder. Input lines: ONE stat's `DEV INO NAME` lines — the live files' (NAME canonical),
# then `/proc/PID/ns/mnt`'s (INO tells the mount namespaces apart, where readable) —, a `\036`
# line, then `/proc/PID/mountinfo` (every process). CERTCTL_Q holds one line per file:
# `IDX PATH`; a file stat named gets its `N` record first. Each file's own mount is found in
# this process's mountinfo (the longest mount point above it on its device): its path inside
# that filesystem is the root a bind mount of it shows.
certctl_mounts_awk='
function oct(c) { return substr(c, 1, 1) * 64 + substr(c, 2, 1) * 8 + substr(c, 3, 1) }
function unesc(s,   out, i, c) {
  out = ""
  while ((i = index(s, "\\")) > 0) {
    c = substr(s, i + 1, 3)
    if (c ~ /^[0-7][0-7][0-7]$/) { out = out substr(s, 1, i - 1) sprintf("%c", oct(c)); s = substr(s, i + 4) }
    else { out = out substr(s, 1, i); s = substr(s, i + 1) }
  }
  return out s
}
function majmin(d,   hi) {
  hi = int(d / 4294967296)
  return (int(d / 256) % 4096 + hi - hi % 4096) ":" (d % 256 + int(d / 4096) % 4294967296 - int(d / 4096) % 256)
}
function under(p, m) { return m == "/" || p == m || substr(p, 1, length(m) + 1) == m "/" }
$0 == "\036" { listing = 1; next }
listing { if ($0 ~ /^\/proc\/[0-9]+\/mountinfo$/) files[++nf] = $0; next }
$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ {
  name = substr($0, length($1) + length($2) + 3)
  if (name ~ /^\/proc\/[0-9]+\/ns\/mnt$/) { p = name; sub(/^\/proc\//, "", p); sub(/\/ns\/mnt$/, "", p); nsof[p] = $2 }
  else if (!(name in st)) st[name] = $1 " " $2
}
END {
  n = split(ENVIRON["CERTCTL_Q"], q, "\n")
  for (k = 1; k <= n; k++) {
    i = index(q[k], " "); p = substr(q[k], i + 1)
    if (i == 0 || !(p in st)) continue
    idx[k] = substr(q[k], 1, i - 1); path[k] = p; split(st[p], di, " ")
    print "N", idx[k], di[1], di[2]
    dev[k] = majmin(di[1]); best[k] = -1
  }
  while ((getline l < "/proc/self/mountinfo") > 0) {
    split(l, a, " "); m = unesc(a[5])
    for (k = 1; k <= n; k++) {
      if (!(k in path) || !under(path[k], m)) continue
      # A mount on the file own device wins over any other; then the longest mount point.
      s = length(m) + (a[3] == dev[k] ? 100000 : 0)
      if (s >= best[k]) { best[k] = s; mdev[k] = a[3]; root[k] = unesc(a[4]); mpt[k] = m }
    }
  }
  close("/proc/self/mountinfo")
  for (k = 1; k <= n; k++) {
    if (!(k in path) || best[k] < 0) continue
    r = (mpt[k] == "/") ? path[k] : substr(path[k], length(mpt[k]) + 1)
    rel[k] = (root[k] == "/" ? "" : root[k]) r
    if (rel[k] == "") rel[k] = "/"
    want[mdev[k]] = 1
  }
  for (f = 1; f <= nf; f++) {
    pid = files[f]; sub(/^\/proc\//, "", pid); sub(/\/mountinfo$/, "", pid)
    if (pid in nsof) { if (nsof[pid] in seen) continue; seen[nsof[pid]] = 1 }
    while ((getline l < files[f]) > 0) {
      split(l, a, " ")
      if (!(a[3] in want) || (a[1] in got)) continue
      r = unesc(a[4])
      for (k = 1; k <= n; k++) {
        if (!(k in rel) || mdev[k] != a[3] || rel[k] != r) continue
        got[a[1]] = 1; comm = ""
        getline comm < ("/proc/" pid "/comm"); close("/proc/" pid "/comm")
        print "M", idx[k], a[1], pid, a[5], comm
      }
    }
    close(files[f])
  }
}'

# certctl_mounts IDX... — the files certctl_files found (certctl_real_IDX): their identity, and
# the mounts whose root each one is. Best effort: what cannot be read is not reported. Each
# file's canonical path is its directory's as `cd -P` leaves it in PWD (no process per file);
# ONE `stat` for the files and the mount namespaces, ONE awk.
certctl_mounts() {
  printf '\036M\n'
  q= n=$# here=${PWD:-/}
  for i in "$@"; do
    eval "r=\${certctl_real_$i-}"
    [ -n "$r" ] && [ -f "$r" ] && [ ! -L "$r" ] || continue
    case $r in /*) ;; *) continue ;; esac
    d=${r%/*}
    CDPATH= cd -P -- "${d:-/}" 2>/dev/null || continue
    c=${PWD%/}/${r##*/}
    case $c in /*) ;; *) continue ;; esac
    case $c in *"$certctl_nl"*) continue ;; esac
    q="$q$i $c$certctl_nl"
    set -- "$@" "$c"
  done
  CDPATH= cd -- "$here" 2>/dev/null || cd /
  shift "$n"
  [ $# -gt 0 ] || return 0
  { stat -L -c '%d %i %n' -- "$@" /proc/[0-9]*/ns/mnt 2>/dev/null
    printf '\036\n'; printf '%s\n' /proc/[0-9]*/mountinfo; } |
    CERTCTL_Q=${q%"$certctl_nl"} awk "$certctl_mounts_awk" 2>/dev/null
  return 0
}
