#!/usr/bin/env bash
# Quick start, command one: build Quorra and run a local cluster on embedded
# RocksDB. Prints each node's HTTP URL; Ctrl-C stops the cluster. Data lives in
# ./quorra-data (run it again to get the same nodes and data back), or in the
# directory given with --dir (relative to where you run this).
#
# Extra arguments go to `quorra dev-cluster` (see --help), e.g. --nodes 3.
source "$(dirname "$0")/lib.sh"
ensure_deps
caller="$PWD"
# A relative --dir means relative to where the user ran this script.
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$caller" "$1" ;; esac; }
args=()
dir_given=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir)
      [ $# -ge 2 ] || die "--dir needs a directory"
      args+=(--dir "$(absolute "$2")"); dir_given=1; shift 2 ;;
    --dir=*)
      args+=(--dir "$(absolute "${1#--dir=}")"); dir_given=1; shift ;;
    *)
      args+=("$1"); shift ;;
  esac
done
[ "$dir_given" = 1 ] || args+=(--dir "$QUORRA_ROOT/quorra-data")
cd "$QUORRA_ROOT"
say "building (the first build compiles RocksDB: about ten minutes on 2 cores)"
cargo build --quiet -p quorra-node --bin quorra
# Its own build: it needs no RocksDB, and must not change the node's features.
cargo build --quiet -p quorra-ring-tools --bin ring-tools
say "ring-tools (status, join, plan, drill, ...): $CARGO_TARGET_DIR/debug/ring-tools"
exec "$CARGO_TARGET_DIR/debug/quorra" dev-cluster "${args[@]}"
