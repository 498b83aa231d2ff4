#!/usr/bin/env bash
# certctl fleet benchmark. Full run:  bash bench/run.sh        Smoke (CI):  bash bench/run.sh --smoke
# WAN mode (a delay forwarder in front of every target):  bash bench/run.sh --wan --rtt 100ms
# Options: bash bench/run.sh --help. Needs root, sshd, nginx, openssl, python3 (stdlib only).
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/fleetbench.py" "$@"
