#!/usr/bin/env bash
# Builds lazypull's own container image (the Helm chart's DaemonSet runs it) as an OCI image
# layout, from Debian packages only:
#
#   1. the Debian packages that own the shared libraries lazypull-snapshotter, lazypull and
#      lazypull-fuse-holder link
#      (their ELF dependencies, resolved with ldd and dpkg -S on this build machine);
#   2. a Debian bookworm tree with exactly those packages: debootstrap --variant=minbase
#      --include=<packages> (cached under the build dir, keyed by the package list);
#   3. the image's root: the stripped binaries at /usr/bin, then only the files their ELF
#      dependencies name inside that tree (ldd run in the tree, so the libraries are the
#      archive's), the dynamic loader, CA certificates, passwd/group/nsswitch.conf and the
#      default /etc/lazypull/config.toml; checked by running both binaries in it with every
#      symbol bound (LD_BIND_NOW);
#   4. umoci: one layer, entrypoint /usr/bin/lazypull-snapshotter.
#
# Prints the image's size as one JSON line on stdout (the last line):
#   {"layout": ..., "tag": ..., "rootfs_bytes": ..., "compressed_bytes": ..., "files": ...,
#    "debootstrap_tree_bytes": ... (the tree the files came from, for comparison)}
#
# Usage (as root):
#   scripts/build-image.sh [--build-dir build] [--output DIR] [--tag TAG] [--push REF]
#                          [--mirror URL] [--insecure-push]
# --output defaults to <build-dir>/image/lazypull-oci; --tag to the version in CMakeLists.txt;
# --push copies the image to a registry with skopeo (--insecure-push: plain HTTP / no TLS
# verification, e.g. a test registry on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
src_dir=$(pwd)
build_dir=build output="" tag="" push="" mirror="" insecure=0
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --push) push=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --insecure-push) insecure=1; shift ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done
build_dir=$(realpath "$build_dir")
[ -n "$output" ] || output="$build_dir/image/lazypull-oci"
output=$(realpath -m "$output")
[ -n "$tag" ] || tag=$(sed -n 's/^project(lazypull VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
if [ -z "$mirror" ]; then
  # The Debian mirror apt uses (deb822 or one-line sources).
  mirror=$(grep -hoE '^URIs: *http[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
           grep -v security | head -n1 | sed 's/^URIs: *//')
  [ -n "$mirror" ] || mirror=$(grep -hoE '^deb +http[^ ]+' /etc/apt/sources.list 2>/dev/null |
                               grep -v security | head -n1 | sed 's/^deb *//')
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
bins=(lazypull-snapshotter lazypull lazypull-fuse-holder)
for b in "${bins[@]}"; do
  [ -x "$build_dir/bin/$b" ] || { echo "build-image: $build_dir/bin/$b is not built" >&2; exit 1; }
done
log() { echo "build-image: $*" >&2; }

work="$build_dir/image/work"
cache="$build_dir/image/cache"
rm -rf "$work"
mkdir -p "$work/bin" "$cache"
for b in "${bins[@]}"; do
  strip --strip-unneeded -o "$work/bin/$b" "$build_dir/bin/$b"
done

# 1. Packages owning the linked libraries.
declare -A pkgs=()
for b in "${bins[@]}"; do
  while read -r lib; do
    real=$(realpath "$lib")
    owner=""
    for candidate in "$lib" "$real" "${lib/#\/usr\/lib\//\/lib\/}" "${real/#\/usr\/lib\//\/lib\/}"; do
      owner=$(dpkg -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$owner" ] && break
    done
    [ -n "$owner" ] || { echo "build-image: no Debian package owns $lib" >&2; exit 1; }
    pkgs[$owner]=1
  done < <(ldd "$work/bin/$b" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
done
pkglist=$(printf '%s\n' "${!pkgs[@]}" ca-certificates | sort -u | paste -sd, -)
log "runtime packages: $pkglist"

# 2. A bookworm tree with them (cached by package list).
key=$(printf '%s %s' "$mirror" "$pkglist" | sha256sum | cut -c1-16)
tree="$work/tree"
if [ -f "$cache/tree-$key.tar" ]; then
  log "debootstrap tree from cache ($key)"
  mkdir -p "$tree" && tar -C "$tree" -xf "$cache/tree-$key.tar"
else
  log "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase --include="$pkglist" bookworm "$tree" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$tree" -cf "$cache/tree-$key.tar.tmp" . && mv "$cache/tree-$key.tar.tmp" "$cache/tree-$key.tar"
fi

# 3. The image root: binaries + exactly the files their ELF dependencies name in the tree.
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{usr/bin,usr/lib,usr/lib64,etc/lazypull,etc/ssl/certs,tmp,proc,sys,dev,run,var/lib,root}
ln -s usr/lib "$rootfs/lib"
ln -s usr/lib64 "$rootfs/lib64"
ln -s usr/bin "$rootfs/bin"
chmod 1777 "$rootfs/tmp"
for b in "${bins[@]}"; do
  install -m 0755 "$work/bin/$b" "$tree/usr/bin/$b"
  install -m 0755 "$work/bin/$b" "$rootfs/usr/bin/$b"
done
copy_from_tree() {  # the file a path names in the tree (symlinks followed), at that path
  local path=$1 dest
  dest="$rootfs${path/#\/lib\//\/usr\/lib\/}"
  dest="${dest/#$rootfs\/lib64\//$rootfs\/usr\/lib64\/}"
  mkdir -p "$(dirname "$dest")"
  cp -L "$tree$path" "$dest"
}
libs=$(for b in "${bins[@]}"; do chroot "$tree" /usr/bin/ldd "/usr/bin/$b"; done |
       grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
for lib in $libs; do copy_from_tree "$lib"; done
# glibc loads libgcc_s at run time (thread cancellation, unwinding) without linking it.
[ -e "$rootfs/usr/lib/x86_64-linux-gnu/libgcc_s.so.1" ] ||
  copy_from_tree /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
cp -L "$tree/etc/ssl/certs/ca-certificates.crt" "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/usr/bin/lazypull\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
cp "$tree/etc/nsswitch.conf" "$rootfs/etc/"
install -m 0644 packaging/config.toml "$rootfs/etc/lazypull/config.toml"
# Every library present, every symbol resolvable.
for b in "${bins[@]}"; do
  LD_BIND_NOW=1 chroot "$rootfs" "/usr/bin/$b" --help >/dev/null ||
    { echo "build-image: /usr/bin/$b does not run in the image" >&2; exit 1; }
done
rootfs_bytes=$(du -sb "$rootfs" | cut -f1)
tree_bytes=$(du -sb "$tree" | cut -f1)
files=$(find "$rootfs" -type f | wc -l)
log "rootfs: $files files, $rootfs_bytes bytes"

# 4. OCI image layout.
rm -rf "$output"
mkdir -p "$(dirname "$output")"
umoci init --layout "$output"
umoci new --image "$output:$tag"
umoci unpack --image "$output:$tag" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$output:$tag" --history.created_by "scripts/build-image.sh" \
  "$work/bundle" >/dev/null
umoci config --image "$output:$tag" --os linux --architecture amd64 \
  --config.entrypoint /usr/bin/lazypull-snapshotter \
  --config.cmd=--config --config.cmd=/etc/lazypull/config.toml \
  --config.env PATH=/usr/bin \
  --config.label org.opencontainers.image.title=lazypull \
  --config.label "org.opencontainers.image.version=$tag" \
  --config.label "org.opencontainers.image.description=lazypull containerd remote snapshotter"
umoci gc --layout "$output"
manifest=$(python3 - "$output" "$tag" <<'PY'
import json, sys
layout, tag = sys.argv[1], sys.argv[2]
index = json.load(open(f"{layout}/index.json"))
for m in index["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
        algo, hexd = m["digest"].split(":")
        man = json.load(open(f"{layout}/blobs/{algo}/{hexd}"))
        print(sum(l["size"] for l in man["layers"]) + man["config"]["size"] + m["size"])
PY
)
if [ -n "$push" ]; then
  flags=()
  [ "$insecure" = 1 ] && flags=(--dest-tls-verify=false)
  skopeo copy --quiet "${flags[@]}" "oci:$output:$tag" "docker://$push"
  log "pushed to $push"
fi
rm -rf "$work"
printf '{"layout": "%s", "tag": "%s", "rootfs_bytes": %s, "compressed_bytes": %s, "files": %s, "debootstrap_tree_bytes": %s}\n' \
  "$output" "$tag" "$rootfs_bytes" "$manifest" "$files" "$tree_bytes"
