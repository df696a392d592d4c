#!/usr/bin/env bash
# Builds and runs containerd's snapshotter conformance suite against lazypull (see
# conformance_test.go). Called by ctest:
#   run_conformance.sh build BUILD_DIR         compile the Go test into BUILD_DIR/bin
#   run_conformance.sh run BUILD_DIR [reference]  run it (reference = containerd's overlayfs)
# Exits non-zero if the build fails or any case fails. Go's build cache lives in the build dir.
set -euo pipefail
mode=$1
build_dir=$2
src_dir=$(cd "$(dirname "$0")" && pwd)
test_bin="$build_dir/bin/lazypull-conformance.test"
export GO111MODULE=off
export GOPATH="$build_dir/go/path:/usr/share/gocode"
export GOCACHE="$build_dir/go/cache"
export GOFLAGS=
case "$mode" in
  build)
    mkdir -p "$build_dir/bin" "$build_dir/go/path"
    cd "$src_dir"
    # Build to a temp name and rename, so a concurrent reader never sees half a binary.
    go test -c -o "$test_bin.tmp.$$" .
    mv -f "$test_bin.tmp.$$" "$test_bin"
    ;;
  run)
    export LAZYPULL_SNAPSHOTTER_BIN="$build_dir/bin/lazypull-snapshotter"
    if [ "${3:-}" = reference ]; then
      export LAZYPULL_CONFORMANCE_REFERENCE=1
    elif [ ! -x "$LAZYPULL_SNAPSHOTTER_BIN" ]; then
      echo "conformance: $LAZYPULL_SNAPSHOTTER_BIN not built" >&2
      exit 1
    fi
    # The suite creates its temp dirs under TMPDIR; each case starts its own daemon.
    out=$(mktemp)
    trap 'rm -f "$out"' EXIT
    set +e
    "$test_bin" -test.v -test.root -test.timeout 10m 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    echo "conformance summary:"
    grep -E -- '^\s*--- (PASS|FAIL|SKIP)' "$out" || true
    # A skip is only acceptable where containerd's overlayfs skips too (Rename).
    if grep -E -- '--- SKIP' "$out" | grep -v '/Rename ' >/dev/null; then
      echo "conformance: unexpected skipped case" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  *)
    echo "usage: $0 build|run BUILD_DIR [reference]" >&2
    exit 2
    ;;
esac
