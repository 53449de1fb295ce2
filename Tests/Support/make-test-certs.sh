#!/bin/sh
# Test certificates for mutual TLS between nodes: make-test-certs.sh DIR CA_NAME NODE...
# Writes DIR/CA_NAME.pem (+ .key) and, per node, DIR/NODE.pem and DIR/NODE.key signed by that CA.
set -eu
dir=$1; ca=$2; shift 2
mkdir -p "$dir"
cd "$dir"
if [ ! -f "$ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$ca.key" -out "$ca.pem" \
    -days 2 -subj "/CN=$ca" 2>/dev/null
fi
for node in "$@"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$node.key" -out "$node.csr" \
    -subj "/CN=$node" 2>/dev/null
  # Names for HTTPS on the loopback (mutual TLS between nodes checks the common name alone).
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$node.ext"
  openssl x509 -req -in "$node.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -out "$node.pem" -days 2 \
    -extfile "$node.ext" 2>/dev/null
  rm -f "$node.csr" "$node.ext"
done
