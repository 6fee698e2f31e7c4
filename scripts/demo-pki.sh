#!/usr/bin/env bash
# Creates the demo PKI and tokens in one folder (default build/demo): a CA, a server certificate
# for localhost/envoy, two client certificates (A: ECDSA P-256, B: RSA 2048) and JWT access
# tokens signed by a demo issuer key. Nothing here is committed; everything is valid for 30 days
# and is made again when it gets close to expiry.
set -euo pipefail

out=${1:-build/demo}
days=30
mkdir -p "$out"
cd "$out"

if [ -f ca.crt ] && [ -f token-a.jwt ] && [ -f edge.crt ] && [ -f jwks.json ] && openssl x509 -in ca.crt -noout -checkend 86400 >/dev/null; then
  exit 0
fi
echo "creating demo certificates and tokens in $out"

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
rsa_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: a certificate for NAME.key, issued by the demo CA.
sign() {
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ec_key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=certbound demo CA" -days "$days" -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt

ec_key server.key
sign server "/CN=localhost" "$(printf '%s\n' \
  'subjectAltName=DNS:localhost,DNS:envoy,IP:127.0.0.1' 'extendedKeyUsage=serverAuth')"

# The edge proxy's own client certificate, named by a SPIFFE ID (envoy/edge-envoy.yaml).
ec_key edge.key
sign edge "/CN=edge/O=certbound demo" "$(printf '%s\n' \
  'subjectAltName=URI:spiffe://certbound.demo/edge' 'extendedKeyUsage=clientAuth')"

ec_key client-a.key
sign client-a "/CN=client-a/O=certbound demo" 'extendedKeyUsage=clientAuth'
rsa_key client-b.key
sign client-b "/CN=client-b/O=certbound demo" 'extendedKeyUsage=clientAuth'

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# RFC 8705 §3.1: base64url of the SHA-256 of the certificate's DER.
thumbprint() { openssl x509 -in "$1" -outform DER | openssl dgst -sha256 -binary | b64url; }

# The demo issuer signs tokens with RS256; a signature filter in front (jwt_authn) can check them.
rsa_key issuer.key
now=$(date +%s)
jwt() {
  local header payload signature
  header=$(printf '{"alg":"RS256","typ":"at+jwt","kid":"demo"}' | b64url)
  payload=$(printf '%s' "$1" | b64url)
  signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign issuer.key | b64url)
  printf '%s.%s.%s' "$header" "$payload" "$signature"
}
claims() {
  printf '{"iss":"https://issuer.certbound.demo","sub":"%s","aud":"certbound-demo","iat":%s,"exp":%s%s}' \
    "$1" "$now" "$((now + days * 86400))" "$2"
}

# The issuer's public key as a JWKS, for jwt_authn (envoy/jwt-authn.yaml).
modulus=$(openssl rsa -in issuer.key -noout -modulus 2>/dev/null | cut -d= -f2)
python3 - "$modulus" > jwks.json <<'PY'
import base64, json, sys
n = bytes.fromhex(sys.argv[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": "demo", "alg": "RS256", "use": "sig",
                            "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}]}))
PY

thumbprint client-a.crt > client-a.x5t
jwt "$(claims client-a ",\"cnf\":{\"x5t#S256\":\"$(cat client-a.x5t)\"}")" > token-a.jwt
jwt "$(claims client-b ",\"cnf\":{\"x5t#S256\":\"$(thumbprint client-b.crt)\"}")" > token-b.jwt
jwt "$(claims plain-client "")" > token-unbound.jwt
rm -f ca.srl
