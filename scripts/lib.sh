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
  kill -TERM "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  # Stopped: never signal its PID again (it may be reused).
  local kept=() p
  for p in "${pids[@]}"; do [ "$p" = "$qpid" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}

# A benchmark's scratch space: $work (removed at exit), $out (the results
# dir under bench-results/, emptied), and $pids, every process the caller
# starts, stopped by PID at exit.
bench_workspace() {
  work=$(mktemp -d)
  out="$QUORRA_ROOT/bench-results${1:+/$1}"
  rm -rf "$out"; mkdir -p "$out"
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
