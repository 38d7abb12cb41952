#!/usr/bin/env bash
# Quick start, command one: build Quorra and run a local cluster on embedded
# RocksDB. Prints each node's HTTP URL; Ctrl-C stops the cluster. Data lives in
# ./quorra-data (run it again to get the same nodes and data back).
#
# Extra arguments go to `quorra dev-cluster` (see --help), e.g. --nodes 3.
source "$(dirname "$0")/lib.sh"
ensure_deps
cd "$QUORRA_ROOT"
say "building (the first build compiles RocksDB: about ten minutes on 2 cores)"
cargo build --quiet -p quorra-node --bin quorra
exec "$CARGO_TARGET_DIR/debug/quorra" dev-cluster --dir "$QUORRA_ROOT/quorra-data" "$@"
