#!/usr/bin/env bash
# Checks the HTTP API against its own OpenAPI document: starts a 3-node
# cluster (`quorra dev-cluster`, free loopback ports, a temporary data dir),
# closes it with an admin token, and runs schemathesis (from PyPI, installed
# into a virtualenv under ~/.cache/quorra) against node 1's /openapi.json
# with a bounded number of examples per operation. It fails on any server
# error (5xx), any answer whose status the document does not list, and any
# body that breaks its schema. A phase of scripts/test.sh.
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
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt_install python3-venv
    python3 -m venv "$venv"
  } || die "cannot make a Python virtualenv at $venv"
  say "installing schemathesis (pip) into $venv"
  "$venv/bin/pip" install --quiet "schemathesis>=4,<5" ||
    die "cannot install schemathesis from PyPI (pip install schemathesis)"
fi

cargo build --quiet -p quorra-node --bin quorra
dir="$(mktemp -d)"
pid=""
stop() {
  # Only the cluster this script started, by its PID (it stops its nodes).
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

# A closed cluster, as users run one: every request carries the admin token.
token="$("$venv/bin/python" - "$url" <<'PY'
import json, sys, urllib.request
body = json.dumps({"id": "schemathesis-admin",
                   "grants": [{"bucket": "*", "allow": ["read", "write", "admin"]}]}).encode()
req = urllib.request.Request(sys.argv[1] + "/v1/admin/tokens", data=body, method="POST",
                             headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=30))["token"])
PY
)" || die "cannot create the admin token"

# Left out: a commit (it would move the cluster's data to whatever layout
# the examples staged, which is an operator's decision, not a fuzzer's).
# Bounded by the examples per operation (a --max-time would make the
# fuzzing phase repeat until it is spent), and by a hard 15 minutes.
status=0
timeout --signal=INT 900 "$venv/bin/schemathesis" --no-color run "$url/openapi.json" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" --seed "$seed" --workers 1 --request-timeout 30 \
  --exclude-path /v1/admin/layout/commit \
  -H "Authorization: Bearer $token" \
  "$@" || status=$?
if [ "$status" -ne 0 ]; then
  say "schemathesis found failures (seed $seed); the nodes' logs:"
  tail -n 40 "$dir"/n*/node.log >&2 || true
fi
exit "$status"
