#!/usr/bin/env bash
# Issue-2 benchmark: Prepare+Mounts+Commit+Remove latency through a private containerd for
# lazypull vs containerd's built-in overlayfs (and vs refproxy = containerd's overlayfs behind
# the same proxy hop), same run, printed as ratios. Also measures lazypull and refproxy on their
# own sockets (no containerd). See bench/README.md.
#
#   bench/snapshotter/run.sh BUILD_DIR [snapbench flags, e.g. -n 1000 -max-ratio 1.2]
#
# Needs root (mounts), a built BUILD_DIR/bin/lazypull-snapshotter, and Debian's golang-go +
# golang-github-containerd-containerd-dev (scripts/install-deps.sh).
set -euo pipefail
build_dir=$(cd "${1:?usage: $0 BUILD_DIR [snapbench flags]}" && pwd)
shift
src_dir=$(cd "$(dirname "$0")" && pwd)
lazypull_bin="$build_dir/bin/lazypull-snapshotter"
[ -x "$lazypull_bin" ] || { echo "run.sh: $lazypull_bin not built" >&2; exit 1; }

export GO111MODULE=off GOFLAGS=
export GOPATH="$build_dir/go/path:/usr/share/gocode" GOCACHE="$build_dir/go/cache"
mkdir -p "$build_dir/go/path"
for prog in snapbench refproxy; do
  (cd "$src_dir/$prog" && go build -o "$build_dir/bin/lazypull-$prog" .)
done

work=$(mktemp -d /tmp/lazypull-bench-XXXXXX)
pids=()
cleanup() {
  # Stop what this script started, by PID, newest first, and wait for each to exit.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_socket() {  # wait_socket SOCKET PID NAME
  for _ in $(seq 300); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "run.sh: $3 exited; log:" >&2; cat "$work/$3.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "run.sh: $3 socket $1 not ready" >&2; exit 1
}

# containerd's GC removes backend snapshots it has no metadata for, so the direct targets get
# their own daemon instances.
mkdir -p "$work/cd"
for inst in lp lp-direct rp rp-direct; do
  mkdir -p "$work/$inst"
  case $inst in
    lp*) "$lazypull_bin" --root "$work/$inst/root" --address "$work/$inst/snap.sock" \
           --log-level warn --metrics-address "" >"$work/$inst.log" 2>&1 & ;;
    rp*) "$build_dir/bin/lazypull-refproxy" --root "$work/$inst/root" \
           --address "$work/$inst/snap.sock" >"$work/$inst.log" 2>&1 & ;;
  esac
  pids+=($!)
  wait_socket "$work/$inst/snap.sock" "${pids[-1]}" "$inst"
done

cat >"$work/cd/config.toml" <<TOML
version = 2
root = "$work/cd/root"
state = "$work/cd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/cd/containerd.sock"
[ttrpc]
  address = "$work/cd/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/cd/opt"
[proxy_plugins.lazypull]
  type = "snapshot"
  address = "$work/lp/snap.sock"
[proxy_plugins.refproxy]
  type = "snapshot"
  address = "$work/rp/snap.sock"
TOML
containerd --config "$work/cd/config.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
  ctr --address "$work/cd/containerd.sock" version >/dev/null 2>&1 && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/containerd.log" >&2; exit 1; }
  sleep 0.05
done

echo "machine: $(nproc) cores, $(uname -r), containerd $(containerd --version | awk '{print $3}'), root fs of the bench: $(stat -f -c %T "$work")"
"$build_dir/bin/lazypull-snapbench" -address "$work/cd/containerd.sock" \
  -targets "containerd:lazypull,containerd:overlayfs,containerd:refproxy,direct:lazypull=$work/lp-direct/snap.sock,direct:refproxy=$work/rp-direct/snap.sock" \
  -baseline containerd:overlayfs "$@"
