#!/usr/bin/env bash
# Installs cargo-deny (the pinned version) from crates.io with `cargo install --locked`, unless
# that version is already installed. Idempotent. A source build: about 5 CPU-minutes (16
# minutes of wall time on a 2-core machine shared with other builds).
set -euo pipefail

version=0.20.2 # rust-version 1.88; builds with the toolchain CI has

if cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  exit 0
fi
echo "install-deps: installing cargo-deny $version (cargo install --locked)" >&2
cargo install --locked cargo-deny --version "$version"
cargo deny --version | grep -qx "cargo-deny $version" || {
  echo "install-deps: cargo-deny $version is not on PATH after the install (is ~/.cargo/bin on PATH?)" >&2
  exit 1
}
