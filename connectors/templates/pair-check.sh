# Written by certctl (the built-in template `pair-check.sh`): the target's openssl must read
# the staged certificate and private key, and the key must belong to the first certificate of
# the file (the leaf). Every value is an argument; nothing here is a placeholder.
# Usage: sh pair-check.sh OPENSSL CERT_FILE KEY_FILE
set -u
openssl=$1
cert=$2
key=$3
if ! cert_pub=$("$openssl" x509 -noout -pubkey -in "$cert"); then
  echo "certctl: the target's openssl cannot read the staged certificate $cert" >&2
  exit 1
fi
if ! key_pub=$("$openssl" pkey -pubout -passin pass: -in "$key"); then
  echo "certctl: the target's openssl cannot read the staged private key $key" >&2
  exit 1
fi
if [ "$cert_pub" != "$key_pub" ]; then
  echo "certctl: the staged private key $key does not belong to the certificate in $cert" >&2
  exit 1
fi
