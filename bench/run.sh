#!/usr/bin/env bash
# certctl fleet benchmark. Full run:  bash bench/run.sh        Smoke (CI):  bash bench/run.sh --smoke
# Options: bash bench/run.sh --help. Needs root, sshd, nginx, openssl, python3 (stdlib only).
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/fleetbench.py" "$@"
