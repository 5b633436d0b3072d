#!/usr/bin/env bash
# The dister REST API with curl: put, get, list, compare-and-swap, delete,
# the v1.5 legacy /kv route, and a health-checked service instance picked
# by the balancer, against a running daemon.
#
#   dister &                    # or: go run ./standalone/cmd/dister &
#   examples/rest/rest.sh
#
# DISTER_ADDR (default 127.0.0.1:4168) and DISTER_TOKEN choose the daemon.
# Every step checks the answer; the script exits non-zero at the first one
# that fails. Keys go under a prefix of their own and are deleted at the end.
set -euo pipefail

addr=${DISTER_ADDR:-127.0.0.1:4168}
case $addr in
  http://* | https://*) base=${addr%/} ;;
  *) base="http://$addr" ;;
esac
auth=()
if [ -n "${DISTER_TOKEN:-}" ]; then
  auth=(-H "Authorization: Bearer $DISTER_TOKEN")
fi
prefix="examples/rest/$$"

fail() {
  echo "rest.sh: $*" >&2
  exit 1
}

# req METHOD PATH [curl args...]: sets $code and $body.
req() {
  local out
  out=$(curl -sS -X "$1" ${auth[@]+"${auth[@]}"} -w '\n%{http_code}' "$base$2" "${@:3}") ||
    fail "$1 $2: curl failed (is the daemon running at $addr?)"
  code=${out##*$'\n'}
  body=${out%$'\n'*}
}

# expect CODE WHAT: the last answer must have HTTP status CODE.
expect() {
  [ "$code" = "$1" ] || fail "$2: HTTP $code, want $1: $body"
}

# contains TEXT WHAT: the last answer's body must contain TEXT.
contains() {
  case $body in
    *"$1"*) ;;
    *) fail "$2: answer lacks $1: $body" ;;
  esac
}

# num FIELD: a number field of the last JSON answer.
num() {
  sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$body"
}

step() { echo "ok  $*"; }

req PUT "/v1/kv/$prefix/greeting" --data-binary 'hello'
expect 200 "put greeting"
rev=$(num revision)
[ -n "$rev" ] || fail "put greeting: no revision in $body"
step "PUT /v1/kv/$prefix/greeting = hello -> revision $rev"

req GET "/v1/kv/$prefix/greeting"
expect 200 "get greeting"
contains '"value":"hello"' "get greeting"
step "GET /v1/kv/$prefix/greeting -> $body"

req GET "/v1/kv/$prefix/greeting?raw"
expect 200 "get greeting raw"
[ "$body" = hello ] || fail "get greeting ?raw: $body"
step "GET /v1/kv/$prefix/greeting?raw -> $body"

req PUT "/v1/kv/$prefix/color" --data-binary 'blue'
expect 200 "put color"
step "PUT /v1/kv/$prefix/color = blue"

req GET "/v1/kv?prefix=$prefix/"
expect 200 "list"
contains "\"key\":\"$prefix/color\"" "list"
contains "\"key\":\"$prefix/greeting\"" "list"
contains '"more":false' "list"
step "GET /v1/kv?prefix=$prefix/ -> 2 keys"

# Compare-and-swap: applies only while the key's mod revision is still $rev.
req PUT "/v1/kv/$prefix/greeting?cas=$rev" --data-binary 'hi'
expect 200 "cas with the current revision"
step "PUT ?cas=$rev (current) -> applied"
req PUT "/v1/kv/$prefix/greeting?cas=$rev" --data-binary 'hey'
expect 409 "cas with a stale revision"
contains '"code":"conflict"' "cas with a stale revision"
step "PUT ?cas=$rev (stale) -> 409 conflict"

# cas=0: create only if absent.
req PUT "/v1/kv/$prefix/lock?cas=0" --data-binary 'me'
expect 200 "create-only put"
req PUT "/v1/kv/$prefix/lock?cas=0" --data-binary 'you'
expect 409 "second create-only put"
step "PUT ?cas=0 -> created once, then 409"

req DELETE "/v1/kv/$prefix/color"
expect 200 "delete color"
contains '"deleted":1' "delete color"
req GET "/v1/kv/$prefix/color"
expect 404 "get deleted color"
contains '"code":"not_found"' "get deleted color"
step "DELETE /v1/kv/$prefix/color, then GET -> 404 not_found"

# The v1.5 API: an envelope with result 1 on success.
req POST "/kv" --data-binary "{\"$prefix/legacy\":\"v1.5\"}"
expect 200 "legacy put"
contains '"result":1' "legacy put"
req GET "/kv?k=$prefix/legacy"
contains '"data":"v1.5"' "legacy get"
step "legacy POST /kv and GET /kv?k= -> $body"

req DELETE "/v1/kv/$prefix/?prefix=true"
expect 200 "delete the prefix"
contains '"deleted":3' "delete the prefix"
step "DELETE /v1/kv/$prefix/?prefix=true -> 3 keys deleted"

# Services: an instance whose tcp check dials the daemon itself; the
# group leader checks it, and the balancer picks it once it passes.
svc="restsh$$"
hostport=${base#http*://}
req PUT "/v1/services/$svc/instances/i1" --data-binary \
  "{\"address\":\"$hostport\",\"priority\":1,\"check\":{\"type\":\"tcp\",\"target\":\"$hostport\",\"interval\":\"200ms\"}}"
expect 200 "register an instance"
step "PUT /v1/services/$svc/instances/i1 (tcp check) -> registered"
for _ in $(seq 1 100); do
  req GET "/v1/services/$svc?passing=true"
  case $body in *'"id":"i1"'*) break ;; esac
  sleep 0.1
done
contains '"status":"passing"' "the instance's check"
step "GET /v1/services/$svc?passing=true -> passing"
req GET "/v1/balance/$svc"
expect 200 "balance"
contains '"id":"i1"' "balance"
step "GET /v1/balance/$svc -> i1"
req DELETE "/v1/services/$svc/instances/i1"
expect 200 "deregister"
req GET "/v1/balance/$svc"
expect 503 "balance with no instance"
contains '"code":"no_instance"' "balance with no instance"
step "DELETE the instance, then GET /v1/balance/$svc -> 503 no_instance"

echo "all steps passed against $base"
