// The uncompressed tar of a SOCI layer (an unmodified gzip layer served through its zTOC's
// spans, format/gzip_spans.h): where its files sit in it, and the tar itself, inflated for
// graduation.
//
// InflateSociTar streams the WHOLE compressed blob through one gunzip (every gzip member; the
// gzip trailers' CRCs checked) into a local file. The blob's bytes are the layer's spans in
// order: each span comes from the chunk cache (a fully fetched layer holds every span that
// carries file data, under the span digest: nothing is downloaded again) or, when the cache does
// not have it (spans of tar headers only, evicted spans), from the registry, spooled to a local
// file and checked against the span digest BEFORE any byte of it is inflated. The few bytes
// before the first span (the gzip header: no tar byte comes from them) are read from the
// registry. Memory is bounded whatever the zTOC declares (pieces of kGraduationPieceBytes).
//
// The result is the layer's tar only if the caller checks its digest against the diff_id.
//
// Thread-compatible; `cache` and `blob` are thread-safe.
#ifndef LAZYPULL_MOUNT_EROFS_SOCI_TAR_H_
#define LAZYPULL_MOUNT_EROFS_SOCI_TAR_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"
#include "mount/erofs/sparse_file_sink.h"

namespace lazypull::mount::erofs {

// By ino - 1: where regular file `ino`'s bytes start in the SOCI layer's tar (from its zTOC),
// tar_payloads.h's kNoPayload for other and empty files. FailedPrecondition when `index` has no
// gzip spans; InvalidArgument naming the file when its chunks do not lie contiguously in the tar.
absl::StatusOr<std::vector<uint64_t>> SociTarPayloads(const format::LayerIndex& index);

struct SociTar {
  Digest digest;               // sha256 of the tar
  uint64_t size = 0;           // its bytes
  uint64_t fetched_bytes = 0;  // compressed bytes read from `blob`
  uint64_t cached_bytes = 0;   // compressed bytes read from the chunk cache
  uint64_t spans_verified = 0;
};

// Appends the tar of the SOCI layer `index` describes to `out` (created with hashing on) and
// finishes it. `blob` is the compressed layer; `spool` a path for a span fetched from it (removed
// at the end). Errors: FailedPrecondition when `index` has no gzip spans; DataLoss when the
// spans do not tile the blob, a span does not match its digest, or the stream does not inflate;
// Cancelled once `cancel` is set; errors of `blob`, the cache and `out` keep their codes.
absl::StatusOr<SociTar> InflateSociTar(const format::LayerIndex& index, ChunkCache* cache,
                                       BlobReader& blob, SparseFileSink& out,
                                       const std::string& spool, const std::atomic<bool>& cancel);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_SOCI_TAR_H_
