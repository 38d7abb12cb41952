#!/usr/bin/env bash
# Data types, side by side on this machine: counter increments and adds of
# one new element to sets of 1,000, 10,000 and 100,000 elements, on a fresh
# 3-node Quorra cluster per repetition (through the client library; n=3,
# r=w=2, no fsync) and on Redis (INCR, SADD; one node, no persistence).
# Installs redis-server when missing, stops everything it started by PID,
# and leaves one JSON per run, summary.md and the plots in
# bench-results/datatypes/.
#
# Usage: bench/datatypes.sh [SECONDS] [CONCURRENCY] [REPETITIONS]   (defaults: 10 16 3)
#        bench/datatypes.sh --quick     (a smoke run: seconds, not numbers)
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
sizes="1000 10000 100000"
if [ "${1:-}" = --quick ]; then
  set -- 2 4 1
  sizes="1000"
fi
seconds=${1:-10}
concurrency=${2:-16}
reps=${3:-3}
whole_numbers "SECONDS, CONCURRENCY and REPETITIONS" "$seconds" "$concurrency" "$reps"
[ "$seconds" -le 600 ] || die "SECONDS is at most 600"
command -v redis-server >/dev/null 2>&1 || apt_install redis-server

build_bench_binaries
bench_workspace datatypes

say "starting Redis (no persistence)"
redis-server --port 6391 --bind 127.0.0.1 --save '' --appendonly no --daemonize no > "$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")

common=(--seconds "$seconds" --concurrency "$concurrency" --out "$out")
# One store's runs: a counter load, then a set-add load per set size (8
# sets, so each holds its size: 8 sets of 100,000 short elements load in
# batches of 1,000).
runs() {
  local name=$1; shift
  "$bench" run "$@" --workload counter --records 1000 --label "$name-counter-$rep" "${common[@]}"
  for size in $sizes; do
    "$bench" run "$@" --workload set-add --records 8 --set-size "$size" \
      --label "$name-set-add-$size-$rep" "${common[@]}"
  done
}
for rep in $(seq "$reps"); do
  start_quorra 3 "-rep$rep"
  runs quorra --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" --urls "${urls%%,*}"
  stop_quorra
  redis-cli -p 6391 flushall >/dev/null 2>&1 || true
  runs redis --target redis --server-pid "$redis_pid" --redis-url redis://127.0.0.1:6391
done
"$bench" report "$out"
