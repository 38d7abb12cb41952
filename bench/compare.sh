#!/usr/bin/env bash
# Side by side, on this machine, in one run: a 3-node Quorra cluster (client
# library and HTTP, with and without dw; with QUORRA_BENCH_NODES="1 3 5" also
# 1- and 5-node clusters), Redis (one node, no persistence) and
# a 3-member etcd cluster (fsync per commit), all on loopback. Installs
# redis-server and etcd-server with apt-get when missing, starts every store
# itself, stops each by the PID it started, and leaves results in
# bench-results/: one JSON per run, summary.md, throughput.svg, latency.svg.
# Every run reports the CPU time per operation of the store's processes
# (from /proc) and of the load generator.
#
# QUORRA_BENCH_GARAGE=1 adds Garage (3 nodes, its K2V API: the closest
# leaderless peer, with DVV causality tokens), installed with
# `cargo install garage` when missing (about 8 minutes on 2 cores, once).
#
# Usage: bench/compare.sh [WORKLOAD] [SECONDS] [CONCURRENCY]   (defaults: a 10 16)
#        bench/compare.sh --quick     (seconds, not numbers: a smoke run)
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
records=10000
if [ "${1:-}" = --quick ]; then
  set -- a 2 4
  records=1000
fi
workload=${1:-a}
seconds=${2:-10}
concurrency=${3:-16}
case "$seconds" in ''|*[!0-9]*) die "SECONDS must be a whole number";; esac
[ "$seconds" -le 600 ] || die "SECONDS is at most 600"

command -v redis-server >/dev/null 2>&1 || apt_install redis-server
command -v etcd >/dev/null 2>&1 || apt_install etcd-server

build_bench_binaries
# QUORRA_BENCH_OUT=SUBDIR keeps this run's reports in bench-results/SUBDIR
# (bench/full.sh keeps each repetition apart).
bench_workspace "${QUORRA_BENCH_OUT:-}"

# Quorra clusters of each size in QUORRA_BENCH_NODES (default 3; the full
# comparison uses "1 3 5"), one after the other, each stopped by its PID
# (start_quorra and stop_quorra are in scripts/lib.sh).

if [ "${QUORRA_BENCH_GARAGE:-0}" = 1 ]; then
  install_garage
fi

say "starting Redis (no persistence)"
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --daemonize no > "$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")

say "starting etcd (3 members)"
etcd_pids=()
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new > "$work/etcd$i.log" 2>&1 &
  pids+=($!)
  etcd_pids+=($!)
done
etcd_urls="http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793"
for _ in $(seq 60); do curl -sf http://127.0.0.1:23791/health >/dev/null && break; sleep 0.5; done

common=(--workload "$workload" --seconds "$seconds" --concurrency "$concurrency" --records "$records" --out "$out")
# QUORRA_BENCH_RATE=OPS paces every store at the same fixed rate (latency at
# a given load, e.g. half of Quorra's peak) instead of as fast as it goes.
if [ -n "${QUORRA_BENCH_RATE:-}" ]; then
  case "$QUORRA_BENCH_RATE" in *[!0-9]*) die "QUORRA_BENCH_RATE is operations per second";; esac
  common+=(--rate "$QUORRA_BENCH_RATE")
fi
for n in ${QUORRA_BENCH_NODES:-3}; do
  case "$n" in ''|*[!0-9]*) die "QUORRA_BENCH_NODES holds node counts, like \"1 3 5\"";; esac
  start_quorra "$n"
  if [ "$n" = 3 ]; then
    "$bench" run --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" "${common[@]}"
    "$bench" run --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" --dw "${common[@]}"
    "$bench" run --target quorra-http --server-pid "$qpid" --urls "$urls" "${common[@]}"
  else
    rep=$(( n < 3 ? n : 3 )); w=$(( n < 2 ? n : 2 ))
    "$bench" run --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" \
      --label "quorra-${n}nodes-$workload" --durability "$n nodes: n=$rep w=$w, no fsync" "${common[@]}"
  fi
  stop_quorra
done
# Garage runs alone: started just before its run, stopped after it
# (start_garage and stop_garage are in scripts/lib.sh).
if [ "${QUORRA_BENCH_GARAGE:-0}" = 1 ]; then
  start_garage
  "$bench" run --target garage --server-pid "$(IFS=,; echo "${garage_pids[*]}")" --urls "$garage_urls" "${common[@]}"
  stop_garage
fi
"$bench" run --target redis --server-pid "$redis_pid" --redis-url redis://127.0.0.1:6390 "${common[@]}"
"$bench" run --target etcd --server-pid "$(IFS=,; echo "${etcd_pids[*]}")" --urls "$etcd_urls" "${common[@]}"
"$bench" report "$out"
