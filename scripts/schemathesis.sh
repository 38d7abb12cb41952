#!/usr/bin/env bash
# Checks the HTTP API against its own OpenAPI document: starts a 3-node
# cluster (`quorra dev-cluster`, free loopback ports, a temporary data dir)
# and a gateway in front of it, closes the cluster with an admin token, and
# runs schemathesis (from PyPI, installed into a virtualenv under
# ~/.cache/quorra) against node 1's /openapi.json and the gateway's, with a
# bounded number of examples per operation. It fails on any server
# error (5xx), any answer whose body breaks its schema (an error answer
# must be the JSON error body, whatever its status), and any content type
# the document does not list. A phase of scripts/test.sh.
#
# QUORRA_SCHEMATHESIS_EXAMPLES (default 50) and QUORRA_SCHEMATHESIS_SEED
# (default fixed, so a failure reproduces) tune the run; extra arguments go
# to `schemathesis run`.
source "$(dirname "$0")/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"

examples="${QUORRA_SCHEMATHESIS_EXAMPLES:-50}"
seed="${QUORRA_SCHEMATHESIS_SEED:-20261207}"
venv="${QUORRA_SCHEMATHESIS_VENV:-${HOME}/.cache/quorra/schemathesis-venv}"

command -v python3 >/dev/null 2>&1 ||
  apt_install python3 python3-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q '4\.32\.5'; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt_install python3-venv
    python3 -m venv "$venv"
  } || die "cannot make a Python virtualenv at $venv"
  say "installing schemathesis (pip) into $venv"
  # Pinned, so a seed reproduces a failure.
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5" ||
    die "cannot install schemathesis from PyPI (pip install schemathesis)"
fi

cargo build --quiet -p quorra-node --bin quorra
dir="$(mktemp -d)"
pid=""
gateway_pid=""
stop() {
  # Only what this script started, by PID (the cluster stops its nodes).
  if [ -n "$gateway_pid" ]; then
    kill -TERM "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
"$CARGO_TARGET_DIR/debug/quorra" dev-cluster --nodes 3 --dir "$dir" --base-port 0 --log warn \
  >"$dir/urls" 2>"$dir/cluster.log" &
pid=$!
for _ in $(seq 1 240); do
  [ "$(grep -c '^http' "$dir/urls" 2>/dev/null || true)" -ge 3 ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/cluster.log" >&2; die "the cluster did not start"; }
  sleep 0.5
done
[ "$(grep -c '^http' "$dir/urls")" -ge 3 ] || die "the cluster did not serve within 120 s"
url="$(head -n1 "$dir/urls")"
say "cluster up: $(tr '\n' ' ' <"$dir/urls")"

# Every node ready (the cluster founded: a node serves before it has), then
# a closed cluster, as users run one: every request carries the admin token.
token="$("$venv/bin/python" - $(cat "$dir/urls") <<'PY'
import json, sys, time, urllib.request

def ready(url):
    try:
        return urllib.request.urlopen(url + "/ready", timeout=5).status == 200
    except Exception:
        return False

deadline = time.monotonic() + 120
while not all(ready(u) for u in sys.argv[1:]):
    if time.monotonic() > deadline:
        sys.exit("the cluster did not become ready within 120 s")
    time.sleep(0.5)
body = json.dumps({"id": "schemathesis-admin",
                   "grants": [{"bucket": "*", "allow": ["read", "write", "admin"]}]}).encode()
req = urllib.request.Request(sys.argv[1] + "/v1/admin/tokens", data=body, method="POST",
                             headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=30))["token"])
PY
)" || die "cannot create the admin token"

# A gateway in front of the cluster, with the dev cluster's admin
# certificate (a gateway checks tokens itself, so it needs the policy).
seeds="$(sed -n 's/^peer_addr = "\(.*\)"$/\1/p' "$dir"/n*/quorra.toml | paste -sd, -)"
"$CARGO_TARGET_DIR/debug/quorra" gateway --seeds "$seeds" --cert-dir "$dir/certs" --name admin \
  --http-addr 127.0.0.1:0 --log warn >"$dir/gateway.out" 2>"$dir/gateway.log" &
gateway_pid=$!
for _ in $(seq 1 120); do
  grep -q '^ready gateway http=' "$dir/gateway.out" 2>/dev/null && break
  kill -0 "$gateway_pid" 2>/dev/null || { cat "$dir/gateway.log" >&2; die "the gateway did not start"; }
  sleep 0.5
done
gateway="$(sed -n 's/^ready gateway http=//p' "$dir/gateway.out")"
[ -n "$gateway" ] || die "the gateway did not serve within 60 s"
# Until it has the policy, the gateway would serve as if open: wait for its 401.
"$venv/bin/python" - "$gateway" <<'PY' || die "the gateway did not learn the access policy"
import sys, time, urllib.error, urllib.request
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        # A key route: the gateway answers it itself (a forwarded one the
        # node would refuse either way).
        urllib.request.urlopen(sys.argv[1] + "/v1/kv/probe/k", timeout=5)
    except urllib.error.HTTPError as e:
        if e.code == 401:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
say "gateway up: $gateway"

# Left out: a commit (it would move the cluster's data to whatever layout
# the examples staged, which is an operator's decision, not a fuzzer's).
# Bounded by the examples per operation (a --max-time would make the
# fuzzing phase repeat until it is spent), and by a hard 15 minutes.
status=0
cd "$dir" # schemathesis keeps its cache in the working directory
for target in "$url" "$gateway"; do
  say "schemathesis against $target"
  timeout --signal=INT 900 "$venv/bin/schemathesis" --no-color run "$target/openapi.json" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" --seed "$seed" --workers 1 --request-timeout 30 \
    --exclude-path /v1/admin/layout/commit \
    -H "Authorization: Bearer $token" \
    "$@" || status=$?
done
if [ "$status" -ne 0 ]; then
  say "schemathesis found failures (seed $seed); the logs:"
  tail -n 40 "$dir"/n*/node.log "$dir/gateway.log" >&2 || true
fi
exit "$status"
