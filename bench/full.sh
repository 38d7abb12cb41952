#!/usr/bin/env bash
# The full side-by-side comparison bench/README.md quotes, in one command:
# REPETITIONS rounds of workloads A, B, C and write-only on Quorra with 1, 3
# and 5 nodes, etcd (3 members), Redis (1 node) and Garage (3 nodes, K2V;
# QUORRA_BENCH_GARAGE=0 leaves it out), release builds; then workload A with
# every store paced at half of Quorra's own 3-node peak (the median of the
# rounds), for latency at half of peak. Writes bench-results/full/table.md
# and half-peak.md: per run, the median ops/s with its range, the store's
# CPU time per operation, p99/p99.9 of the median run, and ratios to each
# peer, median to median.
#
# Usage: bench/full.sh [SECONDS] [CONCURRENCY] [REPETITIONS]   (defaults: 10 16 3;
#        about 45 minutes on 2 cores, plus Garage's install the first time)
source "$(dirname "$0")/../scripts/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
# The rounds set these themselves.
unset QUORRA_BENCH_RATE QUORRA_BENCH_NODES QUORRA_BENCH_OUT
seconds=${1:-10}
concurrency=${2:-16}
reps=${3:-3}
whole_numbers "SECONDS, CONCURRENCY and REPETITIONS" "$seconds" "$concurrency" "$reps"
[ "$reps" -ge 1 ] && [ "$reps" -le 9 ] || die "REPETITIONS is 1 to 9"
export QUORRA_BENCH_PROFILE=release
export QUORRA_BENCH_GARAGE=${QUORRA_BENCH_GARAGE:-1}
rm -rf bench-results/full
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }
for rep in $(seq "$reps"); do
  for w in a b c write; do
    say "round $rep of $reps, workload $w ($(elapsed) so far)"
    QUORRA_BENCH_OUT=full/peak-$rep-$w QUORRA_BENCH_NODES="1 3 5" bench/compare.sh "$w" "$seconds" "$concurrency" >/dev/null
  done
done
build_bench_binaries
"$bench" table bench-results/full/peak-* > bench-results/full/table.md
peak=$("$bench" table --median-of quorra-a bench-results/full/peak-*-a)
half=$(( ${peak%.*} / 2 ))
[ "$half" -ge 1 ] || die "no 3-node peak to halve (quorra-a: $peak)"
for rep in $(seq "$reps"); do
  say "half of peak: every store at $half ops/s, round $rep of $reps ($(elapsed) so far)"
  QUORRA_BENCH_OUT=full/half-$rep QUORRA_BENCH_RATE=$half bench/compare.sh a "$seconds" "$concurrency" >/dev/null
done
"$bench" table bench-results/full/half-* > bench-results/full/half-peak.md
say "done in $(elapsed): Quorra's 3-node peak for A $peak ops/s, half $half"
cat bench-results/full/table.md
echo
echo "At $half ops/s (half of Quorra's 3-node peak for A):"
cat bench-results/full/half-peak.md
