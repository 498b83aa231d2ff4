#!/usr/bin/env bash
# certctl local lab: a real OpenSSH sshd and a real nginx on loopback, a throwaway CA, and one
# certificate rotation driven by certctl — `deploy --dry-run`, `deploy`, `verify` — showing the
# served fingerprint change. Run as root on Debian 12:   bash examples/lab.sh
#
# Which certctl: CERTCTL=PATH (or a command name on PATH) runs that binary, e.g. a release
# binary or the installed package's: `CERTCTL=/usr/bin/certctl bash lab.sh`. Without it, the
# lab builds this checkout (cargo build --release), or, outside a checkout (the copy the
# Debian package installs under /usr/share/doc/certctl/examples), uses `certctl` on PATH.
#
# Everything lives in a fresh temporary directory; the daemons are stopped (by PID) on exit.
# Set CERTCTL_LAB_KEEP=1 to leave them running and the directory in place. Exits non-zero when
# any step fails or the new certificate is not served at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$ROOT/scripts/install-deps.sh" ]; then
  bash "$ROOT/scripts/install-deps.sh"
else
  for bin in /usr/sbin/sshd /usr/sbin/nginx /usr/bin/openssl /usr/bin/ssh-keygen /usr/bin/python3; do
    [ -x "$bin" ] || { echo "lab: $bin is missing: apt-get install openssh-server nginx openssl python3" >&2; exit 1; }
  done
  mkdir -p /run/sshd && chmod 0755 /run/sshd
fi

if [ -n "${CERTCTL:-}" ]; then
  resolved=$(command -v -- "$CERTCTL" || true)
  case "$resolved" in
    /*) ;;
    ?*) resolved="$PWD/$resolved" ;;
  esac
  if [ -z "$resolved" ] || [ ! -f "$resolved" ] || [ ! -x "$resolved" ]; then
    echo "lab: CERTCTL=$CERTCTL is not an executable file" >&2
    exit 2
  fi
  CERTCTL=$resolved
elif [ -f "$ROOT/Cargo.toml" ]; then
  echo "==> building certctl (release)"
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
  target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  CERTCTL="$target_dir/release/certctl"
elif command -v certctl >/dev/null 2>&1; then
  CERTCTL=$(command -v certctl)
else
  echo "lab: no certctl: set CERTCTL=PATH, or run the lab from a checkout to build one" >&2
  exit 2
fi
echo "==> certctl: $CERTCTL ($("$CERTCTL" -V))"

LAB=$(mktemp -d /tmp/certctl-lab.XXXXXX)
ADDR=127.77.0.1
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$ADDR"
}
SSH_PORT=$(free_port)
TLS_PORT=$(free_port)
mkdir -p "$LAB"/{pki,sshd,nginx/tls,nginx/logs,nginx/tmp}

cleanup() {
  if [ "${CERTCTL_LAB_KEEP:-0}" = 1 ]; then
    echo "==> left running (CERTCTL_LAB_KEEP=1): lab in $LAB"
    return
  fi
  [ -f "$LAB/sshd/sshd.pid" ] && kill "$(cat "$LAB/sshd/sshd.pid")" 2>/dev/null || true
  [ -f "$LAB/nginx/nginx.pid" ] && kill "$(cat "$LAB/nginx/nginx.pid")" 2>/dev/null || true
  rm -rf "$LAB"
}
trap cleanup EXIT

echo "==> throwaway CA: root -> intermediate -> two leaves for www.lab.test"
cd "$LAB/pki"
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec root.key
openssl req -x509 -new -key root.key -out root.crt -days 30 -subj /CN=certctl-lab-root 2>/dev/null
ec int.key
openssl req -new -key int.key -out int.csr -subj /CN=certctl-lab-intermediate 2>/dev/null
printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n' > int.ext
openssl x509 -req -in int.csr -CA root.crt -CAkey root.key -CAcreateserial -out int.crt -days 30 -extfile int.ext 2>/dev/null
printf 'subjectAltName=DNS:www.lab.test\nbasicConstraints=CA:false\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > leaf.ext
for leaf in old new; do
  ec "$leaf.key"
  openssl req -new -key "$leaf.key" -out "$leaf.csr" -subj /CN=www.lab.test 2>/dev/null
  openssl x509 -req -in "$leaf.csr" -CA int.crt -CAkey int.key -CAcreateserial -out "$leaf.crt" -days 30 -extfile leaf.ext 2>/dev/null
done
chmod 600 ./*.key

echo "==> nginx on $ADDR:$TLS_PORT serving the OLD certificate"
cat old.crt int.crt > "$LAB/nginx/tls/www.crt"
install -m 600 old.key "$LAB/nginx/tls/www.key"
cat > "$LAB/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $LAB/nginx/nginx.pid;
error_log $LAB/nginx/logs/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $LAB/nginx/tmp/body; proxy_temp_path $LAB/nginx/tmp/proxy;
  fastcgi_temp_path $LAB/nginx/tmp/fastcgi; uwsgi_temp_path $LAB/nginx/tmp/uwsgi; scgi_temp_path $LAB/nginx/tmp/scgi;
  server {
    listen $ADDR:$TLS_PORT ssl;
    server_name www.lab.test;
    ssl_certificate     $LAB/nginx/tls/www.crt;
    ssl_certificate_key $LAB/nginx/tls/www.key;
    location / { return 200 "hello from the certctl lab\n"; }
  }
}
EOF
nginx -e "$LAB/nginx/logs/error.log" -c "$LAB/nginx/nginx.conf"

echo "==> sshd on $ADDR:$SSH_PORT (strict host key: known_hosts written for it)"
cd "$LAB/sshd"
ssh-keygen -q -t ed25519 -N '' -f host_key
ssh-keygen -q -t ed25519 -N '' -f client_key
cp client_key.pub authorized_keys
cat > sshd_config <<EOF
ListenAddress $ADDR:$SSH_PORT
HostKey $LAB/sshd/host_key
PidFile $LAB/sshd/sshd.pid
AuthorizedKeysFile $LAB/sshd/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -f "$LAB/sshd/sshd_config" -E "$LAB/sshd/sshd.log"
printf '[%s]:%s %s\n' "$ADDR" "$SSH_PORT" "$(cut -d' ' -f1,2 host_key.pub)" > known_hosts
for _ in $(seq 50); do (exec 3<>"/dev/tcp/$ADDR/$SSH_PORT") 2>/dev/null && break; sleep 0.1; done

cat > "$LAB/certctl.yaml" <<EOF
defaults:
  user: root
  port: $SSH_PORT
  identity_file: sshd/client_key
  known_hosts: sshd/known_hosts
  verify: { attempts: 6, backoff: 250ms, max_backoff: 2s, consecutive: 2 }

certificates:
  www:
    cert: pki/new.crt
    chain: pki/int.crt
    key: pki/new.key

targets:
  - name: lab-nginx
    host: $ADDR
    connector: nginx
    certificate: www
    params:
      fullchain_path: $LAB/nginx/tls/www.crt
      key_path: $LAB/nginx/tls/www.key
      nginx_conf: $LAB/nginx/nginx.conf
      backup_dir: $LAB/backups
    verify:
      address: $ADDR:$TLS_PORT
      sni: www.lab.test
EOF

served() {
  openssl s_client -connect "$ADDR:$TLS_PORT" -servername www.lab.test </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | sed 's/.*=//'
}
cd "$LAB"
echo
echo "served before:  $(served)"
echo "new leaf:       $(openssl x509 -in pki/new.crt -noout -fingerprint -sha256 | sed 's/.*=//')"
echo
echo "==> certctl deploy --dry-run   (stages, makes nginx load the staged pair, touches nothing live)"
"$CERTCTL" deploy --dry-run -i certctl.yaml
echo
echo "==> certctl deploy"
"$CERTCTL" deploy -i certctl.yaml
echo
echo "==> certctl verify"
"$CERTCTL" verify -i certctl.yaml
echo
after=$(served)
new=$(openssl x509 -in pki/new.crt -noout -fingerprint -sha256 | sed 's/.*=//')
echo "served after:   $after"
if [ "$after" != "$new" ]; then
  echo "lab: FAILED: the new certificate is not served" >&2
  exit 1
fi
echo "lab: ok: the new certificate is served"
