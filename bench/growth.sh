#!/usr/bin/env bash
# Cost growth: the same workload on a fresh 3-node Quorra cluster loaded with
# more and more records, reporting throughput, p99, and each node's resident
# memory and disk use, so growth can be read off. Starts each cluster itself
# and stops it by its PID; results go to bench-results/growth.md (and one
# JSON report per size). Records are loaded by blind inserts (a new key
# needs no read first), and it checks for free disk before it starts.
#
# Usage: bench/growth.sh [SECONDS] [CONCURRENCY]        (defaults: 10 16)
#   QUORRA_GROWTH_RECORDS="100000 1000000 10000000"     record counts (default)
#   QUORRA_GROWTH_VALUE_SIZE=1024                       bytes per value
#   QUORRA_BENCH_PROFILE=release                        optimised builds
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
seconds=${1:-10}
concurrency=${2:-16}
value_size=${QUORRA_GROWTH_VALUE_SIZE:-1024}
sizes=${QUORRA_GROWTH_RECORDS:-100000 1000000 10000000}
for v in "$seconds" "$concurrency" "$value_size" $sizes; do
  case "$v" in ''|*[!0-9]*) die "expected whole numbers, got '$v'";; esac
done

build_bench_binaries
work=$(mktemp -d)
# Three replicas of the largest load, with room for the write-ahead log and
# compaction (about 35 GB for 10M records of 1 KiB): check before starting.
largest=$(printf '%s\n' $sizes | sort -n | tail -1)
need_kb=$(( largest * (value_size + 64) * 3 * 11 / 10 / 1024 ))
free_kb=$(df -Pk "$work" | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
  rmdir "$work"
  die "not enough free disk for $largest records: about $((need_kb / 1048576)) GiB needed under $(dirname "$work"), $((free_kb / 1048576)) GiB free (set TMPDIR, or lower QUORRA_GROWTH_RECORDS)"
fi
out="$QUORRA_ROOT/bench-results"
mkdir -p "$out"
qpid=
cleanup() {
  if [ -n "$qpid" ]; then kill -TERM "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Resident memory of each node process (children of the dev-cluster, by PID).
node_rss() {
  local p
  for p in $(quorra_node_pids); do
    awk '/^VmRSS/ {printf "%d MiB ", $2/1024}' "/proc/$p/status" 2>/dev/null
  done
}
node_disk() {
  local d
  for d in "$1"/n*/data; do du -sm "$d" | awk '{printf "%d MiB ", $1}'; done
}

report="$out/growth.md"
{
  echo "| records | value bytes | ops/s | read p99 ms | update p99 ms | RSS per node | memory budget per node | disk per node |"
  echo "|---:|---:|---:|---:|---:|---|---:|---|"
} > "$report"
for records in $sizes; do
  qdir="$work/q$records"
  say "growth: $records records of $value_size bytes"
  "$quorra" dev-cluster --nodes 3 --dir "$qdir" --base-port 0 > "$qdir.urls" 2>"$qdir.log" &
  qpid=$!
  for _ in $(seq 120); do [ "$(wc -l < "$qdir.urls" 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.5; done
  [ "$(wc -l < "$qdir.urls")" -ge 3 ] || die "Quorra did not start: $(tail -5 "$qdir.log")"
  for u in $(paste -sd' ' "$qdir.urls"); do
    for _ in $(seq 120); do curl -sf "$u/ready" >/dev/null && break; sleep 0.5; done
  done
  "$quorra" certs --out "$qdir/certs" --clients bench >/dev/null
  seeds=$(grep -h '^peer_addr' "$qdir"/n*/quorra.toml | sed 's/.*"\(.*\)"/\1/' | paste -sd,)
  "$bench" run --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" \
    --workload a --blind-load --records "$records" --value-size "$value_size" --seconds "$seconds" \
    --concurrency "$concurrency" --label "growth-$records" --out "$out" >/dev/null
  rss=$(node_rss)
  disk=$(node_disk "$qdir")
  budget=$(curl -sf "$(head -1 "$qdir.urls")/v1/cluster/status" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["storage"]["memory_budget_bytes"] >> 20, "MiB")' || echo "?")
  python3 - "$out/growth-$records.json" "$records" "$value_size" "$rss" "$disk" "$budget" >> "$report" <<'PY'
import json, sys
path, records, size, rss, disk, budget = sys.argv[1:]
r = json.load(open(path))
def p99(op):
    o = r["ops"].get(op)
    return "%.1f" % (o["p99_us"] / 1000) if o else "-"
print(f"| {int(records):,} | {size} | {r['throughput']:,.0f} | {p99('read')} | {p99('update')} | {rss.strip()} | {budget} | {disk.strip()} |")
PY
  tail -1 "$report" >&2
  kill -TERM "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=
  rm -rf "$qdir"
done
cat "$report"
