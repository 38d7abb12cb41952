#!/usr/bin/env bash
# Quick start, command two: build Quorra and run the whole test suite (unit,
# property and cross-process integration tests on loopback), plus the format
# and lint checks CI holds every change to.
source "$(dirname "$0")/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
else
  say "rustfmt not installed: skipping the format check (rustup component add rustfmt)"
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --quiet --workspace --all-targets -- -D warnings
else
  say "clippy not installed: skipping lints (rustup component add clippy)"
fi
cargo test --workspace --no-fail-fast "$@"
