#!/usr/bin/env bash
# Quick start, command two: build Quorra and run the whole test suite (unit,
# property and cross-process integration tests on loopback), the HTTP API
# against its OpenAPI document (schemathesis, on a 3-node cluster), plus the
# format and lint checks CI holds every change to. Prints each phase's time.
#
# --full adds the long runs: 100-node simulations, 4,000 more seeded
# schedules and a 5-minute Jepsen soak (tens of minutes more).
source "$(dirname "$0")/lib.sh"
full=0
if [ "${1:-}" = "--full" ]; then
  full=1
  shift
fi
ensure_deps
cd "$QUORRA_ROOT"

started=$SECONDS
phase_start=$SECONDS
phase() {
  say "phase '$1' took $((SECONDS - phase_start)) s"
  phase_start=$SECONDS
}

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
else
  say "rustfmt not installed: skipping the format check (rustup component add rustfmt)"
fi
phase format
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --quiet --workspace --all-targets -- -D warnings
else
  say "clippy not installed: skipping lints (rustup component add clippy)"
fi
phase lint
cargo test --workspace --no-run --quiet
phase build
if ! { command -v ip && command -v iptables; } >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
  say "network namespaces are not usable here (need root, ip, iptables): tests/netns.rs will skip (and fail under CI=true)"
fi
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
phase test
# The HTTP API against its own OpenAPI document, on a running 3-node cluster.
bash "$QUORRA_ROOT/scripts/schemathesis.sh" || status=$?
phase schemathesis
if [ "$full" = 1 ]; then
  cargo test -p quorra-sim --test simulation -- --ignored || status=$?
  QUORRA_SIM_FIRST_SEED=1001 QUORRA_SIM_SEEDS=4000 \
    cargo test -p quorra-sim --test simulation a_thousand || status=$?
  QUORRA_JEPSEN_SECS=300 cargo test -p quorra-tests --test jepsen || status=$?
  QUORRA_JOIN_KEYS=100000 cargo test -p quorra-tests --test layout a_fourth_node_joins || status=$?
  phase full
fi
say "all phases took $((SECONDS - started)) s"
exit "$status"
