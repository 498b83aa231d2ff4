#!/usr/bin/env bash
# The Debian package as an operator meets it, on this machine (run as root, Debian 12):
# dpkg -i; every file where Debian expects it; /var/lib/certctl 0700; `certctl --version`;
# `man certctl`; bash completion loads; the lab (dry-run, deploy, verify) with /usr/bin/certctl
# run from the package's own copy of examples/lab.sh; then dpkg -r and dpkg -P remove the
# package and keep a backup left in /var/lib/certctl. Called by scripts/check-release.sh.
#   bash scripts/check-deb.sh dist/certctl_VERSION-1_amd64.deb
set -euo pipefail

deb=$(realpath "${1:?usage: check-deb.sh CERTCTL.deb}")
fail() {
  echo "check-deb: FAILED: $*" >&2
  exit 1
}

if dpkg-query -W -f='${Status}' certctl 2>/dev/null | grep -q 'install ok installed'; then
  echo "check-deb: note: a certctl package is installed; it is replaced by $deb, then removed" >&2
fi
dpkg -i "$deb"

for f in /usr/bin/certctl \
  /usr/share/man/man1/certctl.1.gz /usr/share/man/man1/certctl-deploy.1.gz \
  /usr/share/bash-completion/completions/certctl \
  /usr/share/zsh/vendor-completions/_certctl \
  /usr/share/fish/vendor_completions.d/certctl.fish \
  /usr/share/doc/certctl/README.md /usr/share/doc/certctl/docs/deploy.md \
  /usr/share/doc/certctl/copyright \
  /usr/share/doc/certctl/changelog.gz /usr/share/doc/certctl/connectors/README.md \
  /usr/share/doc/certctl/examples/lab.sh /usr/share/doc/certctl/examples/nginx.yaml \
  /usr/share/doc/certctl/examples/ci/github-actions.yml; do
  [ -s "$f" ] || fail "the package did not install $f"
done
[ "$(stat -c '%a %U:%G' /var/lib/certctl)" = "700 root:root" ] ||
  fail "/var/lib/certctl is $(stat -c '%a %U:%G' /var/lib/certctl), not 700 root:root"
/usr/bin/certctl --version
bash -c 'source /usr/share/bash-completion/completions/certctl && complete -p certctl' >/dev/null ||
  fail "the bash completion does not load"
if command -v man >/dev/null; then
  man certctl | grep -q "EXIT STATUS" || fail "man certctl has no EXIT STATUS section"
else
  zcat /usr/share/man/man1/certctl.1.gz | grep -q '^\.TH certctl 1 ' || fail "certctl.1.gz has no .TH line"
  echo "check-deb: note: man is not installed; checked certctl.1.gz's title line only" >&2
fi

CERTCTL=/usr/bin/certctl bash /usr/share/doc/certctl/examples/lab.sh

# A backup set, as a deploy to this machine (or a run's data kept here) would leave.
sentinel="/var/lib/certctl/check-deb.$$"
mkdir -m 0700 "$sentinel"
echo backup >"$sentinel/file"
dpkg -r certctl
[ ! -e /usr/bin/certctl ] || fail "dpkg -r left /usr/bin/certctl"
[ ! -e /usr/share/man/man1/certctl.1.gz ] || fail "dpkg -r left the man page"
[ -f "$sentinel/file" ] || fail "dpkg -r removed a backup in /var/lib/certctl"
dpkg -P certctl
[ -f "$sentinel/file" ] || fail "dpkg -P removed a backup in /var/lib/certctl"
rm -rf "$sentinel"
echo "check-deb: ok: installed, ran the lab, removed; backups kept" >&2
