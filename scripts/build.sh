#!/usr/bin/env bash
# Configures and builds lazypull. Assumes install-deps.sh ran.
#   build.sh [CMAKE_ARGS...]           every target (tests, benchmarks), RelWithDebInfo, into
#                                      ${BUILD_DIR:-build} (scripts/test.sh)
#   build.sh --daemon [CMAKE_ARGS...]  only lazypull-snapshotter, lazypull and lazypull-fuse-holder, Release at -O2
#                                      without debug info, tests and benchmarks off, unity build,
#                                      into ${BUILD_DIR:-build-release} (scripts/run-snapshotter.sh,
#                                      scripts/build-deb.sh)
# CMAKE_ARGS apply when the build dir is first configured.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=all
if [ "${1:-}" = --daemon ]; then
  mode=daemon
  shift
fi
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
# ccache (when installed) lets several checkouts of the tree share compiled objects.
if command -v ccache >/dev/null; then
  GEN+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(cd .. && pwd)} CCACHE_NOHASHDIR=1
fi
if [ "$mode" = all ]; then
  BUILD_DIR=${BUILD_DIR:-build}
  [ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  cmake --build "$BUILD_DIR" -j "$(nproc)"
else
  BUILD_DIR=${BUILD_DIR:-build-release}
  # Unity batches parse the heavy headers (gRPC, protobuf, Abseil) once per batch instead of
  # once per file; see the README for the measured times.
  [ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
      "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" "-DCMAKE_C_FLAGS_RELEASE=-O2 -DNDEBUG" \
      -DLAZYPULL_BUILD_TESTS=OFF -DLAZYPULL_BUILD_BENCH=OFF \
      -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8 "$@"
  if ! cmake --build "$BUILD_DIR" -j "$(nproc)" --target lazypull-snapshotter lazypull lazypull-fuse-holder; then
    # tests/deploy's daemon_unity_build_test sets this: a unity clash must fail CI, not
    # silently double the README's first-start compile.
    if [ "${LAZYPULL_UNITY_STRICT:-0}" = 1 ]; then
      echo "build: the unity build failed (LAZYPULL_UNITY_STRICT=1: no file-by-file fallback)" >&2
      exit 1
    fi
    # CI builds file by file (scripts/test.sh), so two files' same-named file-local helpers
    # may meet in one batch unnoticed there: then build file by file here too.
    echo "build: the unity build failed; building file by file (slower)" >&2
    cmake -S . -B "$BUILD_DIR" -DCMAKE_UNITY_BUILD=OFF
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target lazypull-snapshotter lazypull lazypull-fuse-holder
  fi
fi
