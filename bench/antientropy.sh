#!/usr/bin/env bash
# What anti-entropy costs: workload A on a fresh 3-node Quorra cluster with
# anti-entropy at its default rate, and on one with it off, alternating, so
# both see the same machine state; three runs each by default. Prints each
# run and the medians, and the ratio of the medians (on / off).
#
# Usage: bench/antientropy.sh [SECONDS] [CONCURRENCY] [RUNS]   (defaults: 20 16 3)
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
seconds=${1:-20}
concurrency=${2:-16}
runs=${3:-3}
whole_numbers "SECONDS, CONCURRENCY and RUNS" "$seconds" "$concurrency" "$runs"
[ "$seconds" -le 600 ] || die "SECONDS is at most 600"
[ "$runs" -le 10 ] || die "RUNS is at most 10"

build_bench_binaries
work=$(mktemp -d)
out="$QUORRA_ROOT/bench-results/antientropy"
rm -rf "$out"; mkdir -p "$out"
qpid=
cleanup() {
  if [ -n "$qpid" ]; then kill -TERM "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# One run: a fresh cluster with exchanges every $1 ms (0: off), loaded and
# measured; prints its throughput.
run() {
  local interval=$1 label=$2 qdir="$work/$2"
  "$quorra" dev-cluster --nodes 3 --dir "$qdir" --base-port 0 \
    --anti-entropy-interval-ms "$interval" > "$qdir.urls" 2>"$qdir.log" &
  qpid=$!
  for _ in $(seq 240); do [ "$(wc -l < "$qdir.urls")" -ge 3 ] && break; sleep 0.5; done
  [ "$(wc -l < "$qdir.urls")" -ge 3 ] || die "Quorra did not start: $(tail -5 "$qdir.log")"
  for u in $(paste -sd' ' "$qdir.urls"); do
    for _ in $(seq 120); do curl -sf "$u/ready" >/dev/null && break; sleep 0.5; done
  done
  "$quorra" certs --out "$qdir/certs" --clients bench >/dev/null
  local seeds
  seeds=$(grep -h '^peer_addr' "$qdir"/n*/quorra.toml | sed 's/.*"\(.*\)"/\1/' | paste -sd,)
  "$bench" run --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" \
    --workload a --seconds "$seconds" --concurrency "$concurrency" --records 10000 \
    --label "$label" --durability "anti-entropy every ${interval} ms (0: off)" --out "$out" >/dev/null
  kill -TERM "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
  grep -m1 '"throughput"' "$out/$label.json" | tr -dc '0-9.\n'
}

default_ms=$("$quorra" dev-cluster --help | sed -n 's/.*anti-entropy-interval-ms.*default: \([0-9]*\).*/\1/p' | head -1)
[ -n "$default_ms" ] || default_ms=250
on=(); off=()
for i in $(seq "$runs"); do
  say "run $i of $runs: anti-entropy on (every $default_ms ms)"
  on+=("$(run "$default_ms" "ae-on-$i")")
  say "run $i of $runs: anti-entropy off"
  off+=("$(run 0 "ae-off-$i")")
  echo "run $i: on ${on[-1]} ops/s, off ${off[-1]} ops/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
echo "workload A, ${seconds} s x ${runs}, concurrency ${concurrency}: median on ${m_on} ops/s, off ${m_off} ops/s, on/off $(awk -v a="$m_on" -v b="$m_off" 'BEGIN {printf "%.3f", a/b}')"
