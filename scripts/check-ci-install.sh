#!/usr/bin/env bash
# Runs the install step of examples/ci/github-actions.yml and examples/ci/gitlab-ci.yml exactly
# as written (taken from the YAML), with CERTCTL_URL the tarball's file:// URL: with the right
# CERTCTL_SHA256 it installs /usr/local/bin/certctl, which runs; with a wrong or empty one it
# fails and installs nothing. A certctl already in /usr/local/bin is put back afterwards.
# Called by scripts/check-release.sh (as root).
#   bash scripts/check-ci-install.sh dist/certctl-VERSION-x86_64-linux.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."

tarball=$(realpath "${1:?usage: check-ci-install.sh TARBALL}")
sum=$(sha256sum "$tarball" | cut -d' ' -f1)
dest=/usr/local/bin/certctl
fail() {
  echo "check-ci-install: FAILED: $*" >&2
  exit 1
}

work=$(mktemp -d)
saved=
if [ -e "$dest" ]; then
  saved="$work/saved-certctl"
  cp -p "$dest" "$saved"
fi
restore() {
  rm -f "$dest"
  if [ -n "$saved" ]; then cp -p "$saved" "$dest"; fi
  rm -rf "$work"
}
trap restore EXIT

python3 - "$work" <<'PY'
import sys, yaml
out = sys.argv[1]
gh = yaml.safe_load(open("examples/ci/github-actions.yml"))
runs = {s["run"] for job in gh["jobs"].values() for s in job["steps"] if "CERTCTL_URL" in s.get("run", "")}
gl = yaml.safe_load(open("examples/ci/gitlab-ci.yml"))
items = [i for i in gl[".certctl"]["before_script"] if "CERTCTL_URL" in i]
if len(runs) != 1 or len(items) != 1:
    sys.exit(f"expected one install step per example, found {len(runs)} (GitHub) and {len(items)} (GitLab)")
open(f"{out}/github.sh", "w").write(runs.pop())
open(f"{out}/gitlab.sh", "w").write(items[0])
PY

# The steps' own temp directories land in $work too.
mkdir "$work/tmp"
export TMPDIR="$work/tmp"
for example in github gitlab; do
  script="$work/$example.sh"
  rm -f "$dest"
  CERTCTL_URL="file://$tarball" CERTCTL_SHA256="$sum" bash -e -o pipefail "$script" ||
    fail "$example: the install step failed with the right checksum"
  "$dest" -V >/dev/null || fail "$example: $dest does not run"
  for wrong in "$(printf '%064d' 0)" ""; do
    rm -f "$dest"
    if CERTCTL_URL="file://$tarball" CERTCTL_SHA256="$wrong" bash -e -o pipefail "$script" >/dev/null 2>&1; then
      fail "$example: the install step accepted CERTCTL_SHA256='$wrong'"
    fi
    [ ! -e "$dest" ] || fail "$example: a wrong checksum still installed $dest"
  done
  echo "check-ci-install: $example: installs with the right checksum, refuses a wrong or empty one" >&2
done
