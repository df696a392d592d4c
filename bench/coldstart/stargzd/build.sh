#!/usr/bin/env bash
# Builds stargzd (bench/coldstart's stargz-snapshotter daemon, see main.go) with Debian's golang-go
# in GOPATH mode against /usr/share/gocode, offline:  build.sh BUILD_DIR OUTPUT
#
# stargz-snapshotter's service/resolver imports k8s.io/cri-api/pkg/apis/runtime/v1alpha2, which
# Debian does not package. It is generated here, into a GOPATH overlay in BUILD_DIR, from our own
# CRI proto (proto/k8s/cri/runtime/v1/api.proto) with Debian's protoc and protoc-gen-go 1.3
# (golang-goprotobuf-dev, the generator matching the github.com/golang/protobuf 1.3 runtime in
# /usr/share/gocode). The copy only gets v1alpha2's proto package and Go package: the
# library uses AuthConfig, whose fields are the same in v1 and v1alpha2.
set -euo pipefail
src_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$src_dir/../../.." && pwd)
build_dir=$(realpath -m "${1:?usage: $0 BUILD_DIR OUTPUT}")
out=$(realpath -m "${2:?usage: $0 BUILD_DIR OUTPUT}")
overlay="$build_dir/go/stargzd-path"
cri_pkg=k8s.io/cri-api/pkg/apis/runtime/v1alpha2

for tool in go protoc protoc-gen-go; do
  command -v "$tool" >/dev/null || {
    echo "stargzd/build.sh: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done
[ -d /usr/share/gocode/src/github.com/containerd/stargz-snapshotter/service ] || {
  echo "stargzd/build.sh: golang-github-containerd-stargz-snapshotter-dev missing" >&2; exit 1; }

proto_dir="$build_dir/go/stargzd-proto"
rm -rf "$proto_dir" "$overlay/src/$cri_pkg"
mkdir -p "$proto_dir/runtime/v1alpha2" "$overlay/src/$cri_pkg" "$(dirname "$out")"
sed -e 's|^package runtime\.v1;$|package runtime.v1alpha2;\noption go_package = "'"$cri_pkg"';v1alpha2";|' \
  "$repo/proto/k8s/cri/runtime/v1/api.proto" >"$proto_dir/runtime/v1alpha2/api.proto"
grep -q '^package runtime\.v1alpha2;$' "$proto_dir/runtime/v1alpha2/api.proto" || {
  echo "stargzd/build.sh: no 'package runtime.v1;' line in api.proto" >&2; exit 1; }
protoc --proto_path="$proto_dir" \
  --go_out="plugins=grpc,paths=source_relative:$proto_dir" \
  "$proto_dir/runtime/v1alpha2/api.proto"
mv "$proto_dir/runtime/v1alpha2/api.pb.go" "$overlay/src/$cri_pkg/api.pb.go"

export GO111MODULE=off GOFLAGS= GOPROXY=off
export GOPATH="$overlay:/usr/share/gocode" GOCACHE="$build_dir/go/cache"
cd "$src_dir"
go build -o "$out.tmp.$$" .
mv -f "$out.tmp.$$" "$out"
