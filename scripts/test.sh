#!/usr/bin/env bash
# The whole test suite: installs the daemons it needs (idempotent), builds, runs every test
# against real sshd and nginx on loopback. Run as root: the tests start daemons and write
# root-owned files. This is the command the README gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

export RUST_BACKTRACE=0
export INSTA_UPDATE=no
# The tests that exercise the local history set their own; no run writes to $HOME.
export CERTCTL_HISTORY=off
cargo build --locked --all-targets
cargo test --locked --no-fail-fast --all-targets -- --test-threads "${CERTCTL_TEST_THREADS:-4}"
