#!/usr/bin/env bash
# Measures the README's first command on a bare Debian 12: a fresh debootstrap minbase chroot
# (tests/deploy/debian_chroot.sh, base system cached; apt's package cache starts EMPTY, so every
# package is downloaded from the mirror as on a new node), this checkout's HEAD copied in (git
# archive), then `bash scripts/run-snapshotter.sh` timed until `lazypull health` answers on its
# socket. Prints one JSON line: seconds for packages, compile and the total.
#
# Usage (root): bench/firststart/firststart.sh [WORKDIR]   (default /var/tmp/lazypull-firststart)
# Needs: debootstrap, the Debian mirror of /etc/apt/sources.list.d/debian.sources. Takes 5-10 min
# and both cores: run it on an idle machine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/lazypull-firststart}
root="$work/root"
cleanup() {
  [ -f "$work/daemon.pid" ] && kill "$(cat "$work/daemon.pid")" 2>/dev/null || true
  sleep 1
  for m in dev/pts dev proc sys; do umount -l "$root/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -rf "$root" && mkdir -p "$work"
bash "$repo/tests/deploy/debian_chroot.sh" "$root" "$work/cache"
mkdir -p "$root/src"
git -C "$repo" archive HEAD | tar -C "$root/src" -x
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"

start=$(date +%s.%N)
# The README's command, split only to time its two phases: run-snapshotter.sh is exactly
# install-deps.sh run; build.sh --daemon; exec the daemon.
chroot "$root" bash -c 'cd /src && bash scripts/install-deps.sh run' >"$work/deps.log" 2>&1
deps_done=$(date +%s.%N)
chroot "$root" bash -c 'cd /src && bash scripts/build.sh --daemon' >"$work/build.log" 2>&1
build_done=$(date +%s.%N)
chroot "$root" bash -c 'cd /src && exec ./build-release/bin/lazypull-snapshotter --metrics-address ""' \
  >"$work/daemon.log" 2>&1 &
echo $! >"$work/daemon.pid"
for _ in $(seq 1 300); do
  chroot "$root" /src/build-release/bin/lazypull health >/dev/null 2>&1 && break
  sleep 0.1
done
serving=$(date +%s.%N)
chroot "$root" /src/build-release/bin/lazypull health
pkgs=$(chroot "$root" dpkg-query -W -f='.' | wc -c)
python3 - "$start" "$deps_done" "$build_done" "$serving" "$pkgs" "$(nproc)" <<'PY'
import json, sys
s, d, b, v = map(float, sys.argv[1:5])
print(json.dumps({"bench": "first_start", "packages_s": round(d - s, 1),
                  "compile_s": round(b - d, 1), "daemon_start_s": round(v - b, 2),
                  "total_s": round(v - s, 1), "total_min": round((v - s) / 60, 2),
                  "installed_packages": int(sys.argv[5]), "cores": int(sys.argv[6])}))
PY
