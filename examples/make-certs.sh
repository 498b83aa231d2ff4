#!/usr/bin/env bash
# Throwaway material for the example inventories, so `certctl check -i examples/NAME.yaml` works
# as shipped: a test CA (root -> intermediate) and leaves for www.example.com, app.example.com and
# edge.example.com, written to examples/certs/ (ignored by git; never deploy these).
#   bash examples/make-certs.sh && certctl check -i examples/nginx.yaml
# The generic-ssh example reads its key from the environment:
#   APP_TLS_KEY="$(cat examples/certs/app.key)" certctl check -i examples/generic-ssh.yaml
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")" && pwd)/certs}"
mkdir -p "$DIR"
cd "$DIR"
umask 077
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec root.key
openssl req -x509 -new -key root.key -out root.crt -days 30 -subj /CN=certctl-example-root 2>/dev/null
ec intermediate.key
openssl req -new -key intermediate.key -out intermediate.csr -subj /CN=certctl-example-intermediate 2>/dev/null
printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
openssl x509 -req -in intermediate.csr -CA root.crt -CAkey root.key -CAcreateserial \
  -out intermediate.pem -days 30 -extfile ca.ext 2>/dev/null
cp intermediate.pem chain.pem
leaf() { # NAME DNS
  ec "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:false\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA intermediate.pem -CAkey intermediate.key -CAcreateserial \
    -out "$1.crt" -days 30 -extfile "$1.ext" 2>/dev/null
}
leaf www.example.com www.example.com
leaf app app.example.com
leaf edge edge.example.com
cat edge.crt intermediate.pem > edge-fullchain.pem
rm -f ./*.csr ./*.ext ./*.srl root.key intermediate.key
chmod 644 ./*.crt ./*.pem
echo "throwaway example material in $DIR"
