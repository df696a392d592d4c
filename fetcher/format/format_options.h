// Options shared by the layer format readers.
#ifndef LAZYPULL_FETCHER_FORMAT_FORMAT_OPTIONS_H_
#define LAZYPULL_FETCHER_FORMAT_FORMAT_OPTIONS_H_

#include <cstdint>

#include "fetcher/format/layer_index_builder.h"

namespace lazypull::format {

struct FormatReadOptions {
  // Tree/chunk rules; build.allow_missing_digests also accepts a layer whose TOC digest /
  // manifest checksum annotation is absent (the TOC is then unauthenticated).
  IndexBuildOptions build;
  // Largest TOC accepted, compressed and decompressed (TOC bomb protection). 150 MiB as
  // containers/storage.
  uint64_t max_toc_size = 150ull << 20;
  // OpenLayerIndex fetches this much of the blob's end in its first request when the index's
  // position is not known from annotations, so footer and TOC usually cost one round trip
  // (TailPrefetchingBlobReader). 0 = footer first, then the TOC.
  uint64_t speculative_tail_bytes = 512 << 10;
};

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_FORMAT_OPTIONS_H_
