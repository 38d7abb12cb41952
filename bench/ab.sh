#!/usr/bin/env bash
# A change measured side by side: two builds of the node (A, the baseline,
# and B, the change) run alternately on fresh 3-node clusters, the same
# workload through the client library each time, and the medians of
# throughput and of server and client CPU time per operation are printed
# with B / A. Stops every cluster by its PID.
#
# Usage: bench/ab.sh QUORRA_A QUORRA_B [WORKLOAD] [SECONDS] [REPS] [CONCURRENCY]
#   (defaults: a 10 3 16). Build each with
#   `cargo build --release -p quorra-node --bin quorra` and copy the binary
#   aside before changing the code.
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
[ $# -ge 2 ] || die "usage: bench/ab.sh QUORRA_A QUORRA_B [WORKLOAD] [SECONDS] [REPS] [CONCURRENCY]"
bin_a=$(realpath "$1")
bin_b=$(realpath "$2")
workload=${3:-a}
seconds=${4:-10}
reps=${5:-3}
concurrency=${6:-16}
for b in "$bin_a" "$bin_b"; do [ -x "$b" ] || die "$b is not an executable"; done
whole_numbers "SECONDS, REPS and CONCURRENCY" "$seconds" "$reps" "$concurrency"
[ "$seconds" -le 600 ] || die "SECONDS is at most 600"
[ "$reps" -le 20 ] || die "REPS is at most 20"

export QUORRA_BENCH_PROFILE=${QUORRA_BENCH_PROFILE:-release}
build_bench_binaries
bench_workspace ab
for rep in $(seq "$reps"); do
  for side in a b; do
    if [ "$side" = a ]; then quorra=$bin_a; else quorra=$bin_b; fi
    start_quorra 3 "-$side$rep"
    "$bench" run --target quorra --server-pid "$qpid" --seeds "$seeds" --cert-dir "$qdir/certs" \
      --workload "$workload" --seconds "$seconds" --concurrency "$concurrency" \
      --label "$side-$rep" --out "$out" >/dev/null
    stop_quorra
  done
done
python3 - "$out" "$bin_a" "$bin_b" <<'PY'
import glob, json, statistics, sys
out, a, b = sys.argv[1:]
runs = {"a": [], "b": []}
for path in glob.glob(f"{out}/*.json"):
    r = json.load(open(path))
    runs[r["label"].split("-")[0]].append(r)
def med(side, field):
    vals = [r[field] for r in runs[side] if r.get(field) is not None]
    return statistics.median(vals) if vals else float("nan")
print(f"A = {a}\nB = {b}\n")
print("| | A (median) | B (median) | B / A |\n|---|---:|---:|---:|")
for field, name in [("throughput", "ops/s"), ("server_cpu_us_per_op", "server CPU µs/op"),
                    ("client_cpu_us_per_op", "client CPU µs/op")]:
    x, y = med("a", field), med("b", field)
    print(f"| {name} | {x:,.0f} | {y:,.0f} | {y / x:.2f} |")
print("\nruns (ops/s, server µs/op):")
for side in "ab":
    print(side, ", ".join(f"{r['throughput']:.0f} / {r['server_cpu_us_per_op'] or 0:.0f}"
                          for r in sorted(runs[side], key=lambda r: r["label"])))
PY
