#!/bin/bash
# Builds the `unit` tests (all but those marked NO_SANITIZE, see tests/CMakeLists.txt) with
# AddressSanitizer + UndefinedBehaviorSanitizer (-DLAZYPULL_SANITIZE=ON: a separate CMake tree
# of the whole source, of which only the target lazypull_sanitized_tests is built) into
# BUILD_DIR and runs them there (`ctest -L asan`). Exits non-zero on a build failure or any
# test failure; a sanitizer report (memory error, leak, undefined behaviour) aborts its test,
# with the report in the output.
# Usage: run_sanitized_unit_tests.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
out=$2

gen=(-G Ninja)
if command -v ccache >/dev/null; then
  # Shares objects with other checkouts of the tree, as scripts/build.sh does.
  gen+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(cd "$src/.." && pwd)} CCACHE_NOHASHDIR=1
fi
mkdir -p "$out"
# -O1 -g1: reports keep function names and file:line at a fraction of -O2 -g's compile time.
# No -DNDEBUG: assert() stays on.
cmake -S "$src" -B "$out" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DLAZYPULL_SANITIZE=ON -DLAZYPULL_BUILD_BENCH=OFF >"$out.configure.log" 2>&1 ||
  { cat "$out.configure.log"; exit 1; }
TIMEFORMAT="asan: built in %0R s (CPU: %0U s user, %0S s system)"
time {
  ninja -C "$out" -j "${LAZYPULL_SANITIZE_BUILD_JOBS:-2}" lazypull_sanitized_tests \
    >"$out.build.log" 2>&1 ||
    { grep -A30 -m5 "^FAILED:" "$out.build.log" || tail -n 100 "$out.build.log"; exit 1; }
}

# Leaks fail a test; any report aborts at once (no recovery), with a stack for UB.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$out"
TIMEFORMAT="asan: tests ran in %0R s (CPU: %0U s user, %0S s system)"
time ctest -L asan --output-on-failure --timeout 1200 -j "${LAZYPULL_SANITIZE_JOBS:-2}"
