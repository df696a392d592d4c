#!/usr/bin/env bash
# Builds one Go helper of the test harness (tests/harness/go/<name>) with Debian's golang-go in
# GOPATH mode against /usr/share/gocode (golang-github-containerd-containerd-dev):
#   build_go_tool.sh SRC_DIR BUILD_DIR OUTPUT
# Go's build cache lives in BUILD_DIR/go/cache.
set -euo pipefail
src=$1 build_dir=$2 out=$3
export GO111MODULE=off GOFLAGS=
export GOPATH="$build_dir/go/path:/usr/share/gocode" GOCACHE="$build_dir/go/cache"
mkdir -p "$build_dir/go/path" "$(dirname "$out")"
cd "$src"
go build -o "$out.tmp.$$" .
mv -f "$out.tmp.$$" "$out"
