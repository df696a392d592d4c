// ZstdChunkedReader: builds a LayerIndex from a zstd:chunked blob (containers/storage).
//
// Two variants exist and both are accepted:
//   - current: annotations `io.github.containers.zstd-chunked.{manifest-checksum,
//     manifest-position,tarsplit-position}`, a trailing skippable frame with a 64-byte
//     footer (7 LE u64 + magic "GNUlInUx") and a tar-split frame;
//   - legacy (skopeo 1.9): annotations `io.containers.zstd-chunked.{manifest-checksum,
//     manifest-position}`, a 40-byte footer (4 LE u64 + magic "GnUlInUx"), no tar-split.
// The manifest position comes from the annotations, else from the footer. The checksum
// (sha256 of the COMPRESSED manifest) can only come from the annotations; without it the
// layer is refused unless options.build.allow_missing_digests.
//
// Prefetch: `dev.lazypull.prefetch-range` = "OFFSET:LENGTH" (written by `lazypull convert`
// with prioritized files) becomes LayerIndex::prefetch_range(); it must lie inside the data
// area (before the manifest frame), else the layer is refused with InvalidArgument naming the
// annotation. Without it, a `.prefetch.landmark` entry (stargz-snapshotter's zstd:chunked)
// gives [0, landmark offset).
//
// Errors as EstargzReader: InvalidArgument for malformed input, DataLoss for a checksum
// mismatch or corrupt compressed data, BlobReader errors keep their code. Thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_ZSTD_CHUNKED_READER_H_
#define LAZYPULL_FETCHER_FORMAT_ZSTD_CHUNKED_READER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/format_options.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::format {

inline constexpr std::string_view kZstdChunkedManifestChecksumKey =
    "io.github.containers.zstd-chunked.manifest-checksum";
inline constexpr std::string_view kZstdChunkedManifestPositionKey =
    "io.github.containers.zstd-chunked.manifest-position";
inline constexpr std::string_view kZstdChunkedTarSplitPositionKey =
    "io.github.containers.zstd-chunked.tarsplit-position";
inline constexpr std::string_view kLegacyZstdChunkedManifestChecksumKey =
    "io.containers.zstd-chunked.manifest-checksum";
inline constexpr std::string_view kLegacyZstdChunkedManifestPositionKey =
    "io.containers.zstd-chunked.manifest-position";
inline constexpr std::string_view kLazypullPrefetchRangeKey = "dev.lazypull.prefetch-range";
inline constexpr std::string_view kZstdChunkedFooterMagic = "GNUlInUx";
inline constexpr std::string_view kLegacyZstdChunkedFooterMagic = "GnUlInUx";
inline constexpr uint64_t kZstdChunkedFooterSize = 64;        // payload of the last frame
inline constexpr uint64_t kLegacyZstdChunkedFooterSize = 40;  // payload of the last frame

struct ZstdChunkedLocation {
  bool legacy = false;
  uint64_t manifest_offset = 0;  // of the compressed manifest (skippable frame payload)
  uint64_t manifest_length = 0;
  uint64_t manifest_uncompressed_length = 0;
  uint64_t manifest_type = 0;     // must be 1
  uint64_t tar_split_offset = 0;  // 0 when absent
  uint64_t tar_split_length = 0;
  uint64_t tar_split_uncompressed_length = 0;
  std::optional<Digest> manifest_checksum;
  // From kLazypullPrefetchRangeKey; checked against the data area by BuildZstdChunkedIndex.
  std::optional<ByteRange> prefetch_range;
};

// kLazypullPrefetchRangeKey from `annotations`: nullopt if absent, InvalidArgument naming the
// annotation if it is not "OFFSET:LENGTH" with LENGTH > 0 and no overflow.
absl::StatusOr<std::optional<ByteRange>> PrefetchRangeFromAnnotations(
    const std::map<std::string, std::string>& annotations);

// From the descriptor annotations (current keys first, then legacy). NotFound if neither
// position annotation is present; InvalidArgument if malformed.
absl::StatusOr<ZstdChunkedLocation> ZstdChunkedLocationFromAnnotations(
    const std::map<std::string, std::string>& annotations);

// From `tail`, the last min(72, blob_size) bytes of the blob. NotFound without a footer
// magic; InvalidArgument if a footer is present but inconsistent with the blob.
absl::StatusOr<ZstdChunkedLocation> ParseZstdChunkedFooter(std::string_view tail,
                                                           uint64_t blob_size);

// Builds the index from the manifest JSON (no checksum check; `checksum` is recorded).
absl::StatusOr<LayerIndex> BuildZstdChunkedIndex(std::string_view manifest_json,
                                                 const ZstdChunkedLocation& location,
                                                 uint64_t blob_size, const Digest& checksum,
                                                 const IndexBuildOptions& options);

// Locates, fetches (one range request), verifies, decompresses and indexes the manifest.
absl::StatusOr<LayerIndex> ReadZstdChunkedIndex(
    BlobReader& blob, const std::map<std::string, std::string>& annotations,
    const FormatReadOptions& options = {});

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_ZSTD_CHUNKED_READER_H_
