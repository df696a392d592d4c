#!/usr/bin/env bash
# Installs the Debian packages lazypull needs. Idempotent; safe to run on a bare Debian 12
# machine as root.
#   install-deps.sh run    what scripts/run-snapshotter.sh needs: compilers and the libraries
#                          of the daemon and the CLI (RUN_PKGS; ~1/4 of the test set's bytes)
#   install-deps.sh [test] everything to build, run and test (the run set plus TEST_PKGS,
#                          RUNTIME_PKGS, GO_PKGS and npm)
set -euo pipefail
set_name=${1:-test}
case $set_name in
  run | test) ;;
  *) echo "install-deps: unknown set $set_name (run | test)" >&2; exit 2 ;;
esac
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The daemon and the CLI: compilers and their libraries' -dev packages.
RUN_PKGS=(
  build-essential cmake ninja-build ccache pkg-config ca-certificates
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libfuse3-dev libcurl4-openssl-dev libzstd-dev zlib1g-dev libdeflate-dev libssl-dev
  nlohmann-json3-dev libsqlite3-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev
  prometheus-cpp-dev  # metrics (issue 11)
  # issue 19: SOCI zTOCs are FlatBuffers; flatc generates the C++ reader at build time and
  # decodes our zTOCs to JSON in a test
  libflatbuffers-dev flatbuffers-compiler
)
TEST_PKGS=(
  git clang lld libclang-rt-14-dev clang-format clang-tidy
  libgtest-dev libgmock-dev libbenchmark-dev
  lintian  # scripts/build-deb.sh's package, checked by tests/deploy/deb_package_test
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

wanted=("${RUN_PKGS[@]}")
[ "$set_name" = run ] || wanted+=("${TEST_PKGS[@]}" "${RUNTIME_PKGS[@]}" "${GO_PKGS[@]}")
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# tests/deploy validates Kubernetes objects with the npm package kubernetes-models: npm (Debian's,
# unless a node.js with its own npm is installed).
if [ "$set_name" = test ] && ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# FUSE needs its device node; containerd's default config dir is read by some tools.
[ -e /dev/fuse ] || $SUDO mknod -m 0666 /dev/fuse c 10 229 || true
echo "install-deps: ok"
