#!/usr/bin/env bash
# Where a request's CPU time goes: samples the node processes with perf while
# quorra-bench drives workload A, and draws one flame graph per case into
# bench/flamegraphs/ (1 node through the client library, 3 nodes through the
# client library, 3 nodes over HTTP). Release builds by default. Installs
# linux-perf (apt-get) and inferno (cargo install) when missing; starts each
# cluster itself and stops it by its PID.
#
# Usage: bench/flamegraph.sh [SECONDS] [CONCURRENCY] [TAG]   (defaults: 10 16 now)
#   TAG names the output files (bench/flamegraphs/TAG-CASE.svg), so graphs
#   from before and after a change sit side by side.
#   QUORRA_FLAME_CASES picks the cases (default "1node-client 3node-client
#   3node-http"; also "3node-client-dw": durable writes, dw=1). The folded
#   stacks stay in bench-results/flamegraph/ for a closer look.
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
seconds=${1:-10}
concurrency=${2:-16}
tag=${3:-now}
case "$seconds$concurrency" in ''|*[!0-9]*) die "SECONDS and CONCURRENCY are whole numbers";; esac
[ "$seconds" -le 120 ] || die "SECONDS is at most 120"
case "$tag" in ''|*[!A-Za-z0-9_-]*) die "TAG is letters, digits, - and _";; esac

command -v perf >/dev/null 2>&1 || apt_install linux-perf
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  say "installing inferno (cargo install)"
  cargo install --locked --quiet inferno
fi
export QUORRA_BENCH_PROFILE=${QUORRA_BENCH_PROFILE:-release}
build_bench_binaries
bench_workspace flamegraph
graphs="$QUORRA_ROOT/bench/flamegraphs"
mkdir -p "$graphs"


# profile CASE NODES TARGET [ARGS]: a fresh cluster, the load in the
# background, perf on every node for the measured seconds.
profile() {
  local name=$1 n=$2 target=$3
  shift 3
  local fsync="no fsync"
  case " $* " in *" --dw "*) fsync="dw=1 (fsync)" ;; esac
  start_quorra "$n" "-$name"
  local args=(run "$@" --target "$target" --workload a --records 10000 --warmup 2
    --seconds "$seconds" --concurrency "$concurrency" --server-pid "$qpid"
    --label "$tag-$name" --out "$out"
    --durability "$n node(s): n=$(( n < 3 ? n : 3 )) w=$(( n < 2 ? n : 2 )), $fsync")
  if [ "$target" = quorra ]; then
    args+=(--seeds "$seeds" --cert-dir "$qdir/certs")
  else
    args+=(--urls "$urls")
  fi
  "$bench" "${args[@]}" > "$work/$name.bench.log" 2>&1 &
  local load=$!
  pids+=("$load")
  # Loading and warm-up first: sample only the measured part.
  for _ in $(seq 600); do grep -q '^loaded' "$work/$name.bench.log" && break; sleep 0.1; done
  sleep 2
  local data="$work/$name.perf.data"
  perf record -q -F 199 -g --call-graph dwarf,8192 -p "$(quorra_node_pids | tr ' ' ,)" -o "$data" \
    -- sleep "$seconds" 2>>"$work/$name.perf.log" || die "perf record failed: $(tail -3 "$work/$name.perf.log")"
  wait "$load" || die "the load failed: $(tail -5 "$work/$name.bench.log")"
  local kept=() p
  for p in "${pids[@]}"; do [ "$p" = "$load" ] || kept+=("$p"); done
  pids=("${kept[@]}")
  stop_quorra
  perf script -i "$data" 2>"$work/$name.script.log" | inferno-collapse-perf > "$work/$name.folded" ||
    die "folding the samples failed: $(tail -3 "$work/$name.script.log")"
  [ -s "$work/$name.folded" ] || die "perf recorded no samples of the nodes"
  cp "$work/$name.folded" "$out/$tag-$name.folded"
  inferno-flamegraph --title "$tag: $name, workload A, $concurrency workers" \
    --minwidth 0.2 < "$work/$name.folded" > "$graphs/$tag-$name.svg"
  say "$graphs/$tag-$name.svg ($(wc -l < "$work/$name.folded") stacks)"
}

for c in ${QUORRA_FLAME_CASES:-1node-client 3node-client 3node-http}; do
  case "$c" in
    1node-client) profile "$c" 1 quorra ;;
    3node-client) profile "$c" 3 quorra ;;
    3node-http) profile "$c" 3 quorra-http ;;
    3node-client-dw) profile "$c" 3 quorra --dw ;;
    *) die "unknown case $c (1node-client, 3node-client, 3node-http, 3node-client-dw)" ;;
  esac
done
"$bench" report "$out" > /dev/null
grep -E '^\| ?(run|---|'"$tag"')' "$out/summary.md" | cut -d'|' -f1-8 || true
