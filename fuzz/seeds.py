#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/seeds/<target>/, from the unit-test
vectors. A fresh certificate (openssl, made now) seeds the certificate shapes, so no committed
certificate can expire. Run by `make fuzz` and `make fuzz-ci`; the output is not committed."""

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import urllib.parse

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds")

B64 = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(payload):
    return "eyJhbGciOiJSUzI1NiJ9." + b64url(payload.encode()) + ".c2ln"


def write(target, seeds):
    folder = os.path.join(OUT, target)
    os.makedirs(folder, exist_ok=True)
    for seed in seeds:
        data = seed.encode() if isinstance(seed, str) else seed
        name = hashlib.sha1(data).hexdigest()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def certificate():
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=fuzz seed"],
            check=True, capture_output=True)
        pem = open(crt).read()
        der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        return pem, der


payloads = [
    '{"cnf":{"x5t#S256":"%s"}}' % B64,
    '{"sub":"a","cnf":{"x5t\\u0023S256":"%s"}}' % B64,
    ' {"cnf":{"jkt":"x","x5t#S256":"%s"},"n":[1,{}]}' % B64,
    '{"cnf":{"x5t#S256":"%s"}}' % HEX,
    '{"sub":"a"}', '{"cnf":{"jkt":"abc"}}', "[]", "not json", '{"cnf":{}} trailing',
    '{"cnf":{},"cnf":{}}', '{"cnf":null}', '{"cnf":"abc"}', '{"cnf":{"x5t#S256":null}}',
    '{"cnf":{"x5t#S256":""}}', '{"cnf":{"x5t#S256":42}}', '{"cnf":{"x5t#S256":"abc"}}',
    '{"cnf":{"x5t#S256":"%s","x5t#S256":"%s"}}' % (B64, B64),
    '{"cnf":{"x5t#s256":"%s"}}' % B64,
]
headers = [
    "Bearer abc", "bearer abc", "BEARER  abc.def.ghi ", "Bearer a+b/c==", "Basic dXNlcjpwYXNz",
    "DPoP abc", "Bearerabc", "", "Bearer", "Bearer ", "Bearer a,Bearer b", "Bearer a b",
    "Bearer ===", "Bearer a=b", b"Bearer \xff\xfe", "Basic eDp5,Bearer abc",
    "Basic eDp5, bearer abc", "Bearer abc,Basic eDp5",
    'Digest username="a", realm="b", bearer="c"',
] + ["Bearer " + jwt(p) for p in payloads]
write("authorization", headers + payloads)
write("decide", headers)
write("confirmation", [B64, HEX, HEX.upper(), "", "not a thumbprint", B64 + "=",
                       B64.replace("-", "+"), B64[:-1] + "V"])

pem, der = certificate()
digest = hashlib.sha256(der).hexdigest()
nginx = urllib.parse.quote(pem, safe="-._~")
alb = pem.replace(" ", "%20").replace("\n", "%0A")
xfcc = [
    "By=a;Hash=b", "Hash=a,Hash=b", 'Subject="CN=a, OU=b;c";Hash=h',
    'Subject="CN=\\"q\\", Hash=evil;x";Hash=h', 'Subject="";URI=',
    "By=spiffe://cluster.local/ns/a/sa/b;Hash=h;URI=spiffe://c/d", "X-Custom=1;Hash=h",
    "Hash=a,,Hash=b", 'Subject="a"b;Hash=h', "Hash=a;hash=b",
    "Hash=" + digest, 'By=x;Hash=%s;Cert="%s";Subject="CN=x"' % (digest, nginx),
    "Hash=%s,By=e;Hash=%s" % (digest, "ab" * 32), 'Cert="%s";Chain="%s"' % (alb, alb),
]
write("xfcc", xfcc)
write("certificate_header", xfcc[-4:] + [
    pem, pem.replace("\n", "\r\n"), pem.strip().replace("\n", " "), pem.replace("\n", ""),
    nginx, alb, ":%s:" % base64.b64encode(der).decode(),
    ":%s:" % base64.b64encode(der).decode().rstrip("="), base64.b64encode(der).decode(),
    base64.urlsafe_b64encode(der).decode().rstrip("="), '"%s"' % base64.b64encode(der).decode(),
    base64.b64encode(pem.encode()).decode(), "not a certificate", "%2", "-----BEGIN CERTIFICATE-----",
])
write("certificate_shapes", [bytes(range(i, i + 24)) for i in range(0, 200, 20)])

write("config", [
    "", "{}", '{"mode":"audit","require_bound_token":true,"cnf_encoding":"hex"}',
    '{"audit_header":"","exempt_paths":["/healthz","/.well-known/*"],'
    '"forward_thumbprint_header":"x-client-cert-thumbprint","filter_state":true}',
    '{"cnf_encoding":"base64url","route_overrides":true}', '{"mode":"enforced"}',
    '{"mode":"audit","mode":"audit"}', '{"audit_header":"X-Audit"}',
    '{"exempt_paths":["/ok","health"]}', "[]", '["audit"]', "true", "{", "{}}",
])


def pairs(items):
    out = struct.pack("<I", len(items))
    for k, v in items:
        out += struct.pack("<II", len(k), len(v))
    for k, v in items:
        out += k + b"\0" + v + b"\0"
    return out


write("route", [
    pairs([(b"mode", b"audit"), (b"require_bound_token", b"\x01")]), pairs([(b"mode", b"off")]),
    pairs([]), pairs([(b"mode", b"permissive")]), pairs([(b"require_bound_token", b"true")]),
    b"\x01\0\0\0",
])
# exempt takes structured input (arbitrary): seeds are bytes it reads as rules and a path.
write("exempt", [b"\x02/healthz\0/.well-known/*\0/healthz?probe=1",
                 b"\x01/.well-known/*\0/.well-known/../admin"])
print("seeds written to", OUT)
