#!/usr/bin/env bash
# Installs what scripts/build-release.sh needs, each at a pinned version, and only what is
# missing (idempotent; a second run takes about a second):
#   - Debian packages: binutils (objdump), curl and python3-venv;
#   - zig, from PyPI (`pip install ziglang`), in a private virtualenv: its python is what
#     cargo-zigbuild runs zig with (CARGO_ZIGBUILD_PYTHON_PATH, printed by --print-python);
#   - cargo-zigbuild and cargo-deb, from crates.io (`cargo install --locked`; a source build of
#     about 1 CPU-minute each).
# Run as root on Debian 12 (apt-get), or with those packages already installed.
set -euo pipefail

ZIG_VERSION=0.15.2          # ziglang on PyPI; cargo-zigbuild 0.24 supports it
ZIGBUILD_VERSION=0.24.1     # rust-version 1.88
CARGO_DEB_VERSION=3.8.0     # rust-version 1.85

cache="${XDG_CACHE_HOME:-$HOME/.cache}/certctl-release"
venv="$cache/zig-venv"

if [ "${1:-}" = --print-python ]; then
  echo "$venv/bin/python3"
  exit 0
fi

packages=(binutils curl python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-release-tools: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-release-tools: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi

if [ "$("$venv/bin/python3" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]; then
  echo "install-release-tools: installing zig $ZIG_VERSION (pip install ziglang) into $venv" >&2
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION"
fi

# cargo install builds in a temporary directory of its own (not the project's target dir).
cargo_install() {
  local crate=$1 version=$2 probe=$3
  if "$probe" --version 2>/dev/null | grep -q " $version\$"; then
    return
  fi
  echo "install-release-tools: installing $crate $version (cargo install --locked)" >&2
  env -u CARGO_TARGET_DIR cargo install --quiet --locked "$crate" --version "$version"
  "$probe" --version | grep -q " $version\$" || {
    echo "install-release-tools: $crate $version is not on PATH after the install (is ~/.cargo/bin on PATH?)" >&2
    exit 1
  }
}
cargo_install cargo-zigbuild "$ZIGBUILD_VERSION" cargo-zigbuild
cargo_install cargo-deb "$CARGO_DEB_VERSION" cargo-deb

for tool in objdump dpkg-deb curl sha256sum; do
  command -v "$tool" >/dev/null || { echo "install-release-tools: $tool is missing" >&2; exit 1; }
done
