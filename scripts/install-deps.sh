#!/usr/bin/env bash
# Installs every Debian package lazypull needs to build, run and test.
# Idempotent; safe to run on a bare Debian 12 machine as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  clang lld libclang-rt-14-dev clang-format clang-tidy
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libfuse3-dev libcurl4-openssl-dev libzstd-dev zlib1g-dev libdeflate-dev libssl-dev
  nlohmann-json3-dev libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev
  prometheus-cpp-dev  # metrics (issue 11)
  # issue 19: SOCI zTOCs are FlatBuffers; flatc generates the C++ reader at build time and
  # decodes our zTOCs to JSON in a test
  libflatbuffers-dev flatbuffers-compiler
)
RUNTIME_PKGS=(
  containerd runc docker-registry skopeo fuse3 erofs-utils debootstrap umoci
  stargz-snapshotter apache2-utils curl zstd pigz e2fsprogs iproute2 util-linux rsync
  python3 python3-matplotlib openssl busybox-static
  prometheus systemd  # issue 11: promtool check metrics, systemd-analyze verify
)
GO_PKGS=(
  golang-go golang-github-containerd-containerd-dev golang-github-containerd-stargz-snapshotter-dev
  # issue 11: the Helm chart renderer in tests/deploy
  golang-github-masterminds-sprig-dev golang-github-xeipuuv-gojsonschema-dev golang-k8s-sigs-yaml-dev
  # issue 18: bench/coldstart/stargzd (stargz-snapshotter's daemon from its library): protoc-gen-go
  # 1.3 for the cri-api package Debian lacks; go-toml, docker/cli, go-fuse etc. come with the
  # stargz library's own dependencies
  golang-goprotobuf-dev
)

missing=()
for p in "${BUILD_PKGS[@]}" "${RUNTIME_PKGS[@]}" "${GO_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# tests/deploy validates Kubernetes objects with the npm package kubernetes-models: npm (Debian's,
# unless a node.js with its own npm is installed).
if ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# FUSE needs its device node; containerd's default config dir is read by some tools.
[ -e /dev/fuse ] || $SUDO mknod -m 0666 /dev/fuse c 10 229 || true
echo "install-deps: ok"
