// RebuildZstdChunkedTar: the original uncompressed tar of a zstd:chunked layer, rebuilt from
// what is already local plus the few compressed bytes that are not, so graduating a fully
// fetched layer does not download it again.
//
// zstd:chunked compresses every file chunk as its own zstd frame; everything else of the tar
// (headers, padding, the end-of-archive blocks) sits in other frames between them, and the
// manifest/footer are skippable frames. So the tar is, in blob order: the decompressed "gap"
// frames between chunks (fetched from the registry: headers are small) and each chunk's bytes
// (read through the LayerReader: the verified chunk cache, no network when the layer is
// local; "zeros" chunks are appended as zero runs, never materialized). Gaps are fetched with
// StreamRanges in batches, so a few requests.
//
// Memory is bounded whatever the layer declares: chunks are read in pieces of
// kGraduationPieceBytes, gaps are fetched in pieces of that size (at most kRebuildBatchBytes
// per request batch) and decompressed as a stream (zstd window capped at 16 MiB), zero runs
// cost nothing.
//
// The result is only as good as that layout assumption: the caller MUST compare its sha256
// with the diff_id and use another method on a mismatch. eStargz cannot be rebuilt this way
// (tar headers are compressed into the same gzip members as the data).
//
// Thread-compatible; `reader` and `blob` are thread-safe.
#ifndef LAZYPULL_MOUNT_EROFS_TAR_REBUILDER_H_
#define LAZYPULL_MOUNT_EROFS_TAR_REBUILDER_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "lazypull/blob_reader.h"
#include "mount/erofs/sparse_file_sink.h"

namespace lazypull::mount::erofs {

// Compressed gap bytes held at once (one StreamRanges batch).
inline constexpr uint64_t kRebuildBatchBytes = 4 << 20;

struct RebuildStats {
  uint64_t fetched_bytes = 0;  // compressed gap bytes read from `blob`
  uint64_t local_bytes = 0;    // chunk bytes read through the LayerReader
  uint64_t zero_bytes = 0;     // bytes of "zeros" chunks, appended as zero runs
};

// Appends the rebuilt tar to `out`. FailedPrecondition when the index is not zstd:chunked or
// its chunk frames overlap; DataLoss when a gap does not decompress or ends mid-frame;
// Cancelled once `cancel` is set; read errors keep their codes.
absl::StatusOr<RebuildStats> RebuildZstdChunkedTar(LayerReader& reader, BlobReader& blob,
                                                   ZeroAwareSink& out,
                                                   const std::atomic<bool>& cancel);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_TAR_REBUILDER_H_
