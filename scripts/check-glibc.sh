#!/usr/bin/env bash
# Fails unless the newest GLIBC symbol version a binary needs (objdump -T) is at most MAX
# (default 2.17: RHEL/CentOS 7, Amazon Linux 2, Debian 8 and everything newer).
#   bash scripts/check-glibc.sh dist/certctl [2.17]
set -euo pipefail

bin=${1:?usage: check-glibc.sh BINARY [MAX_GLIBC]}
max=${2:-2.17}
versions=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -u -V)
newest=$(printf '%s\n' "$versions" | tail -n 1)
if [ -z "$newest" ]; then
  echo "check-glibc: $bin: no GLIBC symbol versions found (not a dynamically linked glibc binary?)" >&2
  exit 1
fi
if [ "$(printf '%s\n%s\n' "$newest" "$max" | sort -V | tail -n 1)" != "$max" ]; then
  echo "check-glibc: $bin needs GLIBC_$newest, newer than $max; the symbols that need more than $max:" >&2
  objdump -T "$bin" | awk '{
      for (i = 1; i <= NF; i++) if ($i ~ /GLIBC_/) { v = $i; gsub(/[()]|GLIBC_/, "", v); print v, $NF }
    }' | sort -u -V | while read -r v sym; do
      [ "$(printf '%s\n%s\n' "$v" "$max" | sort -V | tail -n 1)" = "$max" ] || echo "  $sym@GLIBC_$v" >&2
    done
  exit 1
fi
echo "check-glibc: $bin: newest GLIBC symbol version is GLIBC_$newest (<= $max): ok"
