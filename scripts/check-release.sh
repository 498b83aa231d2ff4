#!/usr/bin/env bash
# Checks what scripts/build-release.sh wrote into dist/, the way users meet it. Run as root on
# Debian 12 after build-release.sh (CI runs both; nothing is rebuilt here):
#   1. SHA256SUMS verifies; the tarball holds the binary (the same as dist/certctl), README,
#      LICENSE, CHANGELOG, man pages and completions.
#   2. The binary's newest GLIBC symbol is <= 2.17 (objdump -T), the .deb's Depends says the
#      same version, and the check itself refuses a binary that needs glibc 2.34.
#   3. The lab (dry-run, deploy, verify against a real sshd and nginx) with dist/certctl.
#   4. Both CI examples' install step, run as written against the tarball's file:// URL:
#      installs with the right checksum, refuses (and installs nothing) with a wrong one.
#   5. dpkg -i the .deb: files where Debian expects them, /var/lib/certctl 0700, the lab with
#      /usr/bin/certctl; dpkg -r and dpkg -P: the binary is gone, backups are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GLIBC=2.17

step() { echo "==> check-release: $*" >&2; }
fail() {
  echo "check-release: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root (the lab starts daemons; dpkg installs)"
bash scripts/install-deps.sh
tarball=$(ls dist/certctl-*-x86_64-linux.tar.gz)
deb=$(ls dist/certctl_*_amd64.deb)
name=$(basename "$tarball" .tar.gz)

step "1. SHA256SUMS and the tarball's contents"
(cd dist && sha256sum --check --strict SHA256SUMS)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work"
for f in certctl README.md docs/README.md docs/deploy.md LICENSE CHANGELOG.md man/certctl.1 man/certctl-deploy.1 \
  completions/certctl.bash completions/_certctl completions/certctl.fish completions/certctl.ps1; do
  [ -s "$work/$name/$f" ] || fail "$name.tar.gz has no $f"
done
cmp -s "$work/$name/certctl" dist/certctl || fail "the tarball's binary is not dist/certctl"
dist/certctl --version

step "2. glibc: the binary, the .deb's Depends, and the check itself"
bash scripts/check-glibc.sh dist/certctl "$GLIBC"
depends=$(dpkg-deb --field "$deb" Depends)
[ "$depends" = "libc6 (>= $GLIBC)" ] || fail "$deb: Depends is '$depends', not 'libc6 (>= $GLIBC)'"
if bash scripts/check-glibc.sh /usr/bin/ls "$GLIBC" 2>/dev/null; then
  fail "check-glibc.sh accepted /usr/bin/ls, which needs glibc 2.34"
fi

step "3. the lab with the portable binary"
CERTCTL="$ROOT/dist/certctl" bash examples/lab.sh

step "4. the CI examples' install step, as written"
bash scripts/check-ci-install.sh "$tarball"

step "5. the Debian package: install, lab, remove, purge"
bash scripts/check-deb.sh "$deb"

step "all checks passed"
