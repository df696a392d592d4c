#!/usr/bin/env bash
# Builds helmrender (tests/deploy/helmrender) with Debian's golang-go in GOPATH mode against
# /usr/share/gocode, offline:  build.sh SRC_DIR BUILD_DIR OUTPUT
# Debian ships sprig and semver under their plain import paths while their code imports the
# /v3 module paths, so a small GOPATH overlay maps the /v3 paths onto the Debian sources.
set -euo pipefail
src=$1 build_dir=$(realpath -m "$2") out=$(realpath -m "$3")
overlay="$build_dir/go/helmrender-path"
for m in sprig semver; do
  mkdir -p "$overlay/src/github.com/Masterminds/$m"
  ln -sfn "/usr/share/gocode/src/github.com/Masterminds/$m" "$overlay/src/github.com/Masterminds/$m/v3"
done
export GO111MODULE=off GOFLAGS=
export GOPATH="$overlay:/usr/share/gocode" GOCACHE="$build_dir/go/cache"
mkdir -p "$(dirname "$out")"
cd "$src"
go build -o "$out.tmp.$$" .
mv -f "$out.tmp.$$" "$out"
