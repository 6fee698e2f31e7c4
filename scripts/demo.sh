#!/usr/bin/env bash
# Plays the demo against a real Envoy running envoy/envoy.yaml with certbound, and prints each
# request with the status it got and why. Expects `make build certs envoy` to have run (make demo
# does that). Exits non-zero if any verdict differs from the expected one.
set -euo pipefail

demo=build/demo
envoy=${ENVOY_BIN:-.venv/bin/envoy}
listener=https://localhost:8443
admin=http://127.0.0.1:9901
log=build/demo/envoy.log

for port in 8443 9901 8081; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there and run make demo again" >&2
    exit 1
  fi
done

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

python3 scripts/echo_upstream.py 127.0.0.1 8081 &
pids+=($!)
"$envoy" -c envoy/envoy.yaml --concurrency 1 --use-dynamic-base-id --log-level info >"$log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  curl -fs "$admin/ready" 2>/dev/null | grep -q LIVE && break
  kill -0 "${pids[1]}" 2>/dev/null || { echo "Envoy exited:"; tail -20 "$log"; exit 1; }
  sleep 0.1
done
curl -fs "$admin/ready" >/dev/null || { echo "Envoy did not become ready:"; tail -20 "$log"; exit 1; }
echo "Envoy is up with certbound ($listener); upstream echo on 127.0.0.1:8081"
echo

failures=0
# play EXPECTED DESCRIPTION CURL-ARGS...: one request, its status and the reason.
play() {
  local expected=$1 what=$2 reply status reason
  shift 2
  reply=$(curl -s --cacert "$demo/ca.crt" -w '\n%{http_code}' "$@" "$listener/orders/42")
  status=$(tail -n1 <<<"$reply")
  if [ "$status" = 200 ]; then
    reason="reached the upstream"
  else
    reason=$(head -n -1 <<<"$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin)["error_description"])' 2>/dev/null || echo "?")
  fi
  local mark=ok
  [ "$status" = "$expected" ] || { mark="UNEXPECTED (wanted $expected)"; failures=$((failures + 1)); }
  printf '%-52s %s  %-4s %s\n' "$what" "$status" "$mark" "$reason"
}

a=(--cert "$demo/client-a.crt" --key "$demo/client-a.key")
b=(--cert "$demo/client-b.crt" --key "$demo/client-b.key")
bearer() { printf 'Authorization: Bearer %s' "$(cat "$demo/$1")"; }

play 200 "client A with its own bound token" "${a[@]}" -H "$(bearer token-a.jwt)"
play 401 "client B presenting A's token (stolen token)" "${b[@]}" -H "$(bearer token-a.jwt)"
play 401 "A's token without a client certificate" -H "$(bearer token-a.jwt)"
play 200 "an unbound token, no client certificate" -H "$(bearer token-unbound.jwt)"

echo
echo "A 401 looks like this:"
curl -s -i --cacert "$demo/ca.crt" "${b[@]}" -H "$(bearer token-a.jwt)" "$listener/orders/42" \
  | grep -iE '^(HTTP|www-authenticate)|^\{' | sed 's/^/  /'
echo
echo "certbound's log lines for the denials:"
grep -o 'certbound: #.*' "$log" | sed 's/^/  /' || true

if [ "$failures" -ne 0 ]; then
  echo "$failures verdict(s) differ from the expected ones"
  exit 1
fi
echo
echo "all verdicts as expected; stopping Envoy"
