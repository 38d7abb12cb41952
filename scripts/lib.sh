# Shared by the quick-start scripts: find or install what building Quorra
# needs, and point Cargo at one shared target dir. Source it; do not run it.
#
# Needs: Rust >= 1.88 (cargo), a C++ compiler and libclang (RocksDB's C++ and
# its bindings are built from source by the rocksdb crate).

set -euo pipefail

QUORRA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One target dir shared by every clone on this machine: RocksDB's C++ takes
# about ten minutes to build from nothing, so build it once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME}/.cache/quorra/target}"
mkdir -p "$CARGO_TARGET_DIR"

say() { printf 'quorra: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# libclang itself (libclang.so, libclang-14.so.1, ...), not libclang-cpp,
# which some packages pull in alone and bindgen cannot use.
have_libclang() {
  local dir name
  for dir in "${LIBCLANG_PATH:-/nonexistent}" /usr/lib/llvm-*/lib /usr/lib/* /usr/lib64; do
    for name in 'libclang.so*' 'libclang-[0-9]*.so*'; do
      compgen -G "$dir/$name" >/dev/null && return 0
    done
  done
  return 1
}

apt_install() {
  local pkgs=("$@")
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing: ${pkgs[*]}. Install them with your system's package manager (libclang and a C++ compiler), then run this again."
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      die "missing: ${pkgs[*]}. Run: sudo apt-get update && sudo apt-get install -y ${pkgs[*]}"
    fi
  fi
  say "installing ${pkgs[*]} (apt-get)"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

ensure_deps() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 ||
    die "Rust is not installed: Quorra needs Rust 1.88 or newer with cargo (https://rustup.rs), then run this again."
  local v
  v="$(rustc --version | awk '{print $2}')"
  if [ "$(printf '%s\n1.88.0\n' "$v" | sort -V | head -n1)" != "1.88.0" ]; then
    die "Rust $v is too old: Quorra needs 1.88 or newer (rustup update stable)."
  fi
  local missing=()
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  have_libclang || missing+=(libclang-dev)
  # The network-namespace partition test needs these; install them where we
  # can (root), else that test skips (and fails under CI=true).
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
    have_libclang || die "libclang is still missing after installing libclang-dev; set LIBCLANG_PATH to the directory holding libclang.so."
  fi
}

# Builds `quorra` and `quorra-bench` for the benchmark scripts and sets
# $quorra and $bench to them. QUORRA_BENCH_PROFILE=release measures optimised
# builds (a first release build compiles RocksDB again); the default debug
# build is for trying the scripts out.
build_bench_binaries() {
  local profile=${QUORRA_BENCH_PROFILE:-dev} dir=debug
  [ "$profile" = release ] && dir=release
  cargo build --quiet --profile "$profile" -p quorra-node --bin quorra -p quorra-bench --bin quorra-bench
  quorra="$CARGO_TARGET_DIR/$dir/quorra"
  bench="$CARGO_TARGET_DIR/$dir/quorra-bench"
}

# A dev cluster of N nodes for the benchmarks, under $work (set by the
# caller, with its pids array and $quorra from build_bench_binaries): sets
# qdir, qpid, seeds (peer addresses) and urls (HTTP), and waits until every
# node is ready. stop_quorra stops it by its PID.
start_quorra() {  # N [DIR-SUFFIX]
  local n=$1
  qdir="$work/quorra$n${2:-}"
  say "starting Quorra ($n nodes)"
  "$quorra" dev-cluster --nodes "$n" --dir "$qdir" --base-port 0 > "$qdir.urls" 2>"$qdir.log" &
  qpid=$!
  pids+=("$qpid")
  for _ in $(seq 120); do [ "$(wc -l < "$qdir.urls")" -ge "$n" ] && break; sleep 0.5; done
  [ "$(wc -l < "$qdir.urls")" -ge "$n" ] || die "Quorra did not start: $(tail -5 "$qdir.log")"
  "$quorra" certs --out "$qdir/certs" --clients bench >/dev/null
  seeds=$(grep -h '^peer_addr' "$qdir"/n*/quorra.toml | sed 's/.*"\(.*\)"/\1/' | paste -sd,)
  urls=$(paste -sd, "$qdir.urls")
  # The nodes print their URLs when they serve; give them until every one
  # has joined (ready) before measuring.
  for u in $(paste -sd' ' "$qdir.urls"); do
    for _ in $(seq 120); do curl -sf "$u/ready" >/dev/null && break; sleep 0.5; done
  done
}
# The node processes of the dev cluster $qpid (its children), one line.
quorra_node_pids() {
  local t kids=""
  for t in /proc/"$qpid"/task/*/children; do kids="$kids $(cat "$t" 2>/dev/null)"; done
  echo $kids
}
stop_quorra() {
  stop_pids "$qpid"
}
# Stops processes this script started, by PID, and drops them from pids:
# stopped, their PIDs are never signalled again (they may be reused).
stop_pids() {
  local p kept=()
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    [[ " $* " == *" $p "* ]] || kept+=("$p")
  done
  pids=("${kept[@]}")
}

# A benchmark's scratch space: $work (removed at exit), $out (the results
# dir under bench-results/, emptied), and $pids, every process the caller
# starts, stopped by PID at exit.
# Dies unless every argument after the first is a whole number; the first
# names them in the message ("SECONDS and CONCURRENCY").
whole_numbers() {
  local what=$1 v
  shift
  for v in "$@"; do
    case "$v" in ''|*[!0-9]*) die "$what are whole numbers";; esac
  done
}

bench_workspace() {
  case "${1:-}" in /*|*..*) die "QUORRA_BENCH_OUT is a directory under bench-results/ (no leading / and no ..): $1";; esac
  work=$(mktemp -d)
  out="$QUORRA_ROOT/bench-results${1:+/$1}"
  # A run replaces the reports of the run before it, but not the
  # subdirectories other runs keep (bench/full.sh's rounds).
  if [ -n "${1:-}" ]; then rm -rf "$out"; else find "$out" -maxdepth 1 -type f -delete 2>/dev/null || true; fi
  mkdir -p "$out"
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

# Garage, the leaderless peer of bench/compare.sh (QUORRA_BENCH_GARAGE=1):
# install_garage sets garage_bin, installing the version the scripts are
# written for with cargo when it is missing; start_garage starts 3 nodes under
# $work (replication factor 3, metadata_fsync = false: Garage's default),
# gives them a layout, the bench key and bucket, waits until every node's
# K2V API serves the key, and sets garage_pids and garage_urls; stop_garage
# stops them by their PIDs.
GARAGE_VERSION=2.5.0
install_garage() {
  garage_bin=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
  if [ ! -x "$garage_bin" ]; then
    say "installing Garage $GARAGE_VERSION with cargo install (about 8 minutes on 2 cores, once)"
    cargo install garage --locked --version "$GARAGE_VERSION" >&2 || die "could not install Garage (cargo install garage)"
    garage_bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  fi
  "$garage_bin" --version 2>/dev/null | grep -q "$GARAGE_VERSION" \
    || die "$garage_bin is not Garage $GARAGE_VERSION (the version these scripts configure): $("$garage_bin" --version 2>&1 | head -1)"
}
start_garage() {
  say "starting Garage (3 nodes, replication factor 3, metadata_fsync = false: its default)"
  local rpc_secret i id
  rpc_secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  # A bench key of our own, imported: Garage's key ids are GK + 24 hex digits.
  export QUORRA_BENCH_K2V_KEY_ID=GK0123456789abcdef01234567
  QUORRA_BENCH_K2V_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  export QUORRA_BENCH_K2V_SECRET
  garage_pids=()
  garage_urls=""
  for i in 1 2 3; do
    mkdir -p "$work/garage$i"
    cat > "$work/garage$i.toml" <<EOF
metadata_dir = "$work/garage$i/meta"
data_dir = "$work/garage$i/data"
db_engine = "lmdb"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:390${i}1"
rpc_public_addr = "127.0.0.1:390${i}1"
rpc_secret = "$rpc_secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:390${i}0"
[k2v_api]
api_bind_addr = "127.0.0.1:390${i}4"
[admin]
api_bind_addr = "127.0.0.1:390${i}3"
EOF
    "$garage_bin" -c "$work/garage$i.toml" server > "$work/garage$i.log" 2>&1 &
    pids+=($!)
    garage_pids+=($!)
    garage_urls+="${garage_urls:+,}http://127.0.0.1:390${i}4"
  done
  g() { "$garage_bin" -c "$work/garage1.toml" "$@"; }
  local ids=()
  for i in 1 2 3; do
    id=""
    for _ in $(seq 100); do
      id=$("$garage_bin" -c "$work/garage$i.toml" node id -q 2>/dev/null) && break
      sleep 0.2
    done
    [ -n "$id" ] || die "Garage node $i did not start: $(tail -3 "$work/garage$i.log")"
    ids+=("${id%%@*}")
    [ "$i" = 1 ] || g node connect "$id" >/dev/null || die "Garage node 1 could not connect to node $i"
  done
  for id in "${ids[@]}"; do
    g layout assign -z dc1 -c 1G "$id" >/dev/null || die "Garage's layout did not take node $id"
  done
  g layout apply --version 1 >/dev/null || die "Garage's layout did not apply"
  g key import --yes -n bench "$QUORRA_BENCH_K2V_KEY_ID" "$QUORRA_BENCH_K2V_SECRET" >/dev/null \
    || die "could not import Garage's bench key"
  local made=""
  for _ in $(seq 100); do g bucket create bench >/dev/null 2>&1 && { made=1; break; }; sleep 0.2; done
  [ -n "$made" ] || die "Garage did not create the bench bucket: $(g bucket create bench 2>&1 | tail -1)"
  g bucket allow --read --write --owner bench --key "$QUORRA_BENCH_K2V_KEY_ID" >/dev/null \
    || die "could not give the bench key the bench bucket"
  # Each node checks signatures against its own copy of the key table: wait
  # until a signed request succeeds on every node.
  local url ok
  for url in ${garage_urls//,/ }; do
    ok=""
    for _ in $(seq 50); do
      "$bench" run --target garage --urls "$url" --records 1 --operations 1 --warmup 0 --concurrency 1 \
        --workload c --out "$work/garage-probe" >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    [ -n "$ok" ] || die "Garage's K2V API at $url did not take the bench key"
  done
  rm -rf "$work/garage-probe"
}
stop_garage() {
  stop_pids "${garage_pids[@]}"
  garage_pids=()
}
