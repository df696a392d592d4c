#!/usr/bin/env bash
# Makes DIR a bare Debian 12 (debootstrap --variant=minbase bookworm) with this machine's Debian
# apt sources (bookworm, -updates, -security: what a real Debian 12 node has) and package lists,
# for deb_package_test. The tree is cached as a tar under CACHE_DIR, keyed by the sources, so
# only the first run downloads the base system; apt's downloaded .debs are kept in
# CACHE_DIR/archives (bind-mount it on DIR/var/cache/apt/archives).
#
# Usage: debian_chroot.sh DIR CACHE_DIR
set -euo pipefail
dir=$1 cache=$2
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || { echo "debian_chroot: $sources missing (not a Debian 12 host?)" >&2; exit 1; }
mirror=$(grep -hoE '^URIs: *http[^ ]+' "$sources" | grep -v security | head -n1 | sed 's/^URIs: *//')
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
mkdir -p "$cache/archives/partial"
key=$(cat "$sources" | sha256sum | cut -c1-16)
tar="$cache/bookworm-minbase-$key.tar"
if [ ! -f "$tar" ]; then
  build="$cache/build-$key"
  rm -rf "$build"
  debootstrap --variant=minbase bookworm "$build" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  rm -f "$build/etc/apt/sources.list"
  cp "$sources" "$build/etc/apt/sources.list.d/debian.sources"
  cp -L /etc/resolv.conf "$build/etc/resolv.conf"
  chroot "$build" apt-get update -qq >"$cache/apt-update.log" 2>&1 ||
    { tail -n 30 "$cache/apt-update.log" >&2; exit 1; }
  chroot "$build" apt-get clean
  tar -C "$build" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$build"
fi
mkdir -p "$dir"
tar -C "$dir" -xf "$tar"
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
# The daemon's FUSE device (debootstrap makes only the basic nodes).
[ -e "$dir/dev/fuse" ] || mknod -m 0666 "$dir/dev/fuse" c 10 229
