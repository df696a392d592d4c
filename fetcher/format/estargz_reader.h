// EstargzReader: builds a LayerIndex from an eStargz (or legacy stargz) blob.
//
// Reads, through a BlobReader, the footer (51-byte eStargz or 47-byte legacy stargz), then
// the TOC gzip member [toc_offset, size - footer_size) in one range request; gunzips it,
// skips the tar header(s) to `stargz.index.json`, checks sha256(TOC JSON) against the layer
// descriptor annotation `containerd.io/snapshot/stargz/toc.digest` and builds the index.
// Landmarks are hidden; `.prefetch.landmark` gives LayerIndex::prefetch_range().
// Each chunk spans the gzip member starting at its `offset` up to the next member start
// (the next entry offset with innerOffset 0, or the TOC offset).
//
// Errors: InvalidArgument for malformed input (footer, TOC JSON, entries, ranges),
// DataLoss for corrupt compressed data or a TOC digest mismatch, ResourceExhausted is never
// returned (a TOC bomb is InvalidArgument), transport errors from the BlobReader keep their
// code. Stateless functions; thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_ESTARGZ_READER_H_
#define LAZYPULL_FETCHER_FORMAT_ESTARGZ_READER_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/format_options.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::format {

inline constexpr std::string_view kEstargzTocDigestAnnotation =
    "containerd.io/snapshot/stargz/toc.digest";
inline constexpr std::string_view kEstargzUncompressedSizeAnnotation =
    "io.containers.estargz.uncompressed-size";
inline constexpr std::string_view kEstargzTocName = "stargz.index.json";
inline constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";
inline constexpr uint64_t kEstargzFooterSize = 51;
inline constexpr uint64_t kLegacyStargzFooterSize = 47;

struct EstargzFooter {
  uint64_t toc_offset = 0;
  uint64_t footer_size = 0;  // 51 or 47
};

// Parses the footer from `tail`, the last min(51, blob_size) bytes of a blob of `blob_size`
// bytes. InvalidArgument if neither footer form matches or the TOC offset is outside the
// blob.
absl::StatusOr<EstargzFooter> ParseEstargzFooter(std::string_view tail, uint64_t blob_size);

// Extracts the TOC JSON from the decompressed TOC member (tar header(s) + JSON + padding).
absl::StatusOr<std::string_view> ExtractEstargzTocJson(std::string_view toc_tar);

// Builds the index from the TOC JSON (no digest check; `toc_digest` is just recorded).
absl::StatusOr<LayerIndex> BuildEstargzIndex(std::string_view toc_json, uint64_t toc_offset,
                                             uint64_t blob_size, const Digest& toc_digest,
                                             const IndexBuildOptions& options);

// Reads footer + TOC from `blob`, verifies the TOC digest against `expected_toc_digest`
// (absent: InvalidArgument unless options.build.allow_missing_digests) and builds the index.
absl::StatusOr<LayerIndex> ReadEstargzIndex(BlobReader& blob,
                                            const std::optional<Digest>& expected_toc_digest,
                                            const FormatReadOptions& options = {});

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_ESTARGZ_READER_H_
