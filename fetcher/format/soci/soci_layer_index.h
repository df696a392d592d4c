// BuildSociLayerIndex: the LayerIndex of an unmodified gzip layer described by a SOCI zTOC, so
// the layer is served lazily like an eStargz one (the design is in span_slices.h).
//
// The file tree is the zTOC's entries through LayerIndexBuilder (names cleaned, whiteouts and
// opaque directories in the overlay view, hardlinks resolved, xattrs from the SCHILY.xattr.*
// PAX records, permission bits = mode & 07777). A regular file's chunks are the slices of the
// spans its tar payload lies in (ChunkCompression::kGzipSpan): the compressed range of the span,
// the slice's offset inside the inflated span, and the span digest. The index's SpanDecoder
// inflates spans from their checkpoints.
//
// Thread-safe (no shared state; the returned index is immutable, its decoder thread-safe).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_INDEX_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_INDEX_H_

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/format/layer_index_builder.h"
#include "fetcher/format/soci/ztoc.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

class SpanWindows;

// `ztoc` comes from ParseZtoc (or BuildZtoc) and `ztoc_digest` is the digest it was verified
// against (LayerIndex::toc_digest()). The index's blob is the compressed layer
// (compressed_archive_size bytes). With `windows` (a fine index: fine_windows.h), the
// checkpoints' windows come from it, not from the zTOC (whose windows are zeroed); a window
// it cannot give fails that span's inflate with its error. InvalidArgument (from the
// builder) for a tree it refuses.
absl::StatusOr<format::LayerIndex> BuildSociLayerIndex(
    const std::shared_ptr<const Ztoc>& ztoc, const Digest& ztoc_digest,
    const format::IndexBuildOptions& options = {},
    std::shared_ptr<const SpanWindows> windows = nullptr);

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_INDEX_H_
