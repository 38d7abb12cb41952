#!/usr/bin/env bash
# Builds the `quorra:local` image with no registry access, for machines that
# have a Docker engine but cannot pull images:
#
# 1. a Debian base image, made once with debootstrap (from Debian's package
#    mirror, debootstrap's default) and `docker import`ed as
#    quorra-base:bookworm;
# 2. deploy/Dockerfile.local on that base, with the `quorra` and
#    `ring-tools` binaries the test command builds (so RocksDB is not
#    compiled again in another profile).
#
# Usage: deploy/build-local-image.sh [--bin PATH] [--ring-tools PATH]
#   --bin PATH          use this `quorra` binary instead of building one
#   --ring-tools PATH   and this `ring-tools` (default: ring-tools-under-test
#                       next to the `quorra` binary)
# Environment: QUORRA_IMAGE (default quorra:local), QUORRA_BASE_IMAGE
# (default quorra-base:bookworm).
source "$(dirname "$0")/../scripts/lib.sh"

image=${QUORRA_IMAGE:-quorra:local}
base=${QUORRA_BASE_IMAGE:-quorra-base:bookworm}
suite=bookworm
bin=
tools=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --ring-tools) tools=${2:?--ring-tools needs a path}; shift 2 ;;
    *) die "unknown argument $1 (usage: deploy/build-local-image.sh [--bin PATH] [--ring-tools PATH])" ;;
  esac
done

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running, may this user use it?)"

if ! docker image inspect "$base" >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "making the base image needs root (debootstrap): run as root, or docker import a Debian $suite root filesystem as $base yourself"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  root=$(mktemp -d)
  trap 'rm -rf --one-file-system "$root"' EXIT
  say "making the $base base image with debootstrap (a few minutes, once)"
  debootstrap --variant=minbase "$suite" "$root" >/dev/null ||
    die "debootstrap failed (it needs Debian's package mirror)"
  tar -C "$root" -c . | docker import - "$base" >/dev/null
  rm -rf --one-file-system "$root"
  trap - EXIT
fi

if [ -z "$bin" ]; then
  ensure_deps
  cd "$QUORRA_ROOT"
  say "building quorra (the test command's build: reused when it is there)"
  cargo test --workspace --no-run --quiet
  bin="$CARGO_TARGET_DIR/debug/quorra-under-test"
fi
[ -x "$bin" ] || die "no quorra binary at $bin"
[ -n "$tools" ] || tools="$(dirname "$bin")/ring-tools-under-test"
[ -x "$tools" ] || die "no ring-tools binary at $tools (give --ring-tools PATH)"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/quorra"
cp "$tools" "$ctx/ring-tools"
# Debug info is most of a debug build's size; the image does not need it.
command -v strip >/dev/null 2>&1 && strip --strip-debug "$ctx/quorra" "$ctx/ring-tools"
if ! docker build --quiet --build-arg "RUNTIME_BASE=$base" \
  -f "$QUORRA_ROOT/deploy/Dockerfile.local" -t "$image" "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  die "docker build failed"
fi
# The host's binary must run on the image's Debian (a newer host's glibc
# would make every container crash at start).
if ! out=$(docker run --rm "$image" --version 2>&1); then
  docker image rm -f "$image" >/dev/null 2>&1 || true
  die "the binary does not run on $base ($out): build on Debian $suite or an older system"
fi
say "built $image ($out)"
