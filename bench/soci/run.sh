#!/bin/bash
# soci index bench (issue 19): peak RSS and time of `lazypull index create` on a small and a
# large one-layer gzip image (memory must not grow with the layer), and its time against
# `lazypull convert --format estargz` of the same image in the same run (as a ratio).
#
#   bench/soci/run.sh BUILD_DIR [SMALL_RANDOM_MB] [LARGE_RANDOM_MB] [SOURCE_DIR]
#
# Each layer is SOURCE_DIR (default /usr/lib/python3.11) plus N MiB of random bytes, tarred
# and gzipped (-6) into an OCI layout written here by hand (one layer, linux/<host arch>).
# Prints one JSON line per layer. Not a ctest test.
set -euo pipefail
build=$(realpath "$1")
small=${2:-16}
large=${3:-256}
src=${4:-/usr/lib/python3.11}
lp=$build/bin/lazypull
work=$(mktemp -d "${TMPDIR:-/tmp}/lazypull-soci-bench-XXXXXX")
trap 'rm -rf "$work"' EXIT
arch=$(dpkg --print-architecture)

# blob FILE LAYOUT: moves FILE into LAYOUT's blobs as sha256 and prints "DIGEST SIZE".
blob() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$2/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

# layout NAME RANDOM_MB: an OCI layout $work/NAME with tag v1.
layout() {
  local dir=$work/$1 tree=$work/tree-$1
  mkdir -p "$dir/blobs/sha256" "$tree"
  cp -a "$src" "$tree/src"
  head -c "$(($2 << 20))" /dev/urandom > "$tree/random.bin"
  tar -C "$tree" -cf "$work/$1.tar" .
  local diff_id
  diff_id=sha256:$(sha256sum "$work/$1.tar" | cut -d' ' -f1)
  gzip -6 -n -c "$work/$1.tar" > "$work/$1.tar.gz"
  rm -rf "$tree" "$work/$1.tar"
  read -r layer lsize < <(blob "$work/$1.tar.gz" "$dir")
  printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$arch" "$diff_id" > "$work/config"
  read -r config csize < <(blob "$work/config" "$dir")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config" "$csize" "$layer" "$lsize" > "$work/manifest"
  read -r manifest msize < <(blob "$work/manifest" "$dir")
  echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$manifest" "$msize" > "$dir/index.json"
  echo "$lsize"
}

# measure OUT_PREFIX CMD...: runs CMD, prints "PEAK_RSS_KB SECONDS".
measure() {
  local out=$1
  shift
  /usr/bin/time -o "$out.time" -f '%M %e' "$@" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  cat "$out.time"
}

for spec in "small:$small" "large:$large"; do
  name=${spec%%:*}
  mb=${spec##*:}
  size=$(layout "$name" "$mb")
  read -r idx_rss idx_s < <(measure "$work/idx-$name" "$lp" index create \
    "oci:$work/$name:v1" "oci:$work/soci-$name:v1")
  ztoc=$(grep -o 'zTOC sha256:[0-9a-f]* ([^)]*)' "$work/idx-$name.log" | sed 's/.*(//; s/)//')
  read -r conv_rss conv_s < <(measure "$work/conv-$name" "$lp" convert --format estargz \
    "oci:$work/$name:v1" "oci:$work/esgz-$name:v1")
  printf '{"layer":"%s","layer_bytes":%s,"index_create_s":%s,"index_create_peak_rss_kb":%s,"ztoc":"%s","convert_estargz_s":%s,"convert_peak_rss_kb":%s,"index_create_over_convert":%.3f}\n' \
    "$name" "$size" "$idx_s" "$idx_rss" "$ztoc" "$conv_s" "$conv_rss" \
    "$(echo "$idx_s / $conv_s" | bc -l)"
  rm -rf "$work/$name" "$work/soci-$name" "$work/esgz-$name"
done
