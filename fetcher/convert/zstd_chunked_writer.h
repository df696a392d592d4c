// WriteZstdChunked: turns an uncompressed layer tar into a zstd:chunked blob in the current
// containers/storage layout (pkg/chunked/compressor), readable as a plain tar.zst by any
// client.
//
// Every byte of the source tar is kept in order, so the DiffID does not change — unless files
// are prioritized (ZstdChunkedOptions::prioritized_files): then those entries come first, in
// the order the eStargz writer uses (fetcher/convert/entry_order.h), the tar is reordered and
// the DiffID changes, and `dev.lazypull.prefetch-range` records where they end. A new zstd
// frame starts at every non-empty payload and at every chunk boundary inside it; chunks are
// content-defined (a rolling checksum, as the reference) and runs of >= 1 KiB of zeros become
// "zeros" chunks; `max_chunk_size` bounds both. After the data come three skippable frames:
// the zstd-compressed TOC ("manifest"), the zstd-compressed tar-split stream, and the 64-byte
// footer (magic "GNUlInUx").
#ifndef LAZYPULL_FETCHER_CONVERT_ZSTD_CHUNKED_WRITER_H_
#define LAZYPULL_FETCHER_CONVERT_ZSTD_CHUNKED_WRITER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/tar/tar_scanner.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::convert {

inline constexpr char kZstdChunkedManifestChecksumAnnotation[] =
    "io.github.containers.zstd-chunked.manifest-checksum";
inline constexpr char kZstdChunkedManifestPositionAnnotation[] =
    "io.github.containers.zstd-chunked.manifest-position";
inline constexpr char kZstdChunkedTarSplitPositionAnnotation[] =
    "io.github.containers.zstd-chunked.tarsplit-position";
// "OFFSET:LENGTH" of the compressed bytes holding the prioritized entries (lazypull's own;
// read by fetcher/format/zstd_chunked_reader as the layer's prefetch range).
inline constexpr char kLazypullPrefetchRangeAnnotation[] = "dev.lazypull.prefetch-range";
inline constexpr uint64_t kZstdChunkedFooterSize = 64;
inline constexpr char kZstdChunkedFooterMagic[] = "GNUlInUx";

struct ZstdChunkedOptions {
  int zstd_level = 3;
  // Upper bound of one chunk (data or zeros). Must be > 0.
  uint64_t max_chunk_size = 4ull << 20;
  // A chunk boundary where the low `rollsum_bits` of the rolling checksum are all ones
  // (16 as the reference: ~64 KiB average chunks).
  int rollsum_bits = 16;
  // Runs of at least this many zero bytes become a "zeros" chunk.
  uint64_t hole_threshold = 1024;
  // Paths (absolute or relative to the layer root) to write first, with their parents and
  // hardlink targets, in this order. Paths absent from the layer are reported in
  // ZstdChunkedResult::missing_prioritized_files. When no entry moves the output is exactly
  // what it is without a list.
  std::vector<std::string> prioritized_files;
};

struct ZstdChunkedResult {
  Digest blob_digest;
  uint64_t blob_size = 0;
  Digest diff_id;  // sha256 of the uncompressed stream = of the source tar
  uint64_t uncompressed_size = 0;
  Digest manifest_checksum;  // sha256 of the compressed manifest
  uint64_t manifest_offset = 0, manifest_length = 0, manifest_uncompressed_length = 0;
  uint64_t tarsplit_offset = 0, tarsplit_length = 0, tarsplit_uncompressed_length = 0;
  // True when prioritized entries were moved first: the uncompressed stream is then the source
  // tar reordered (one entry per name), so `diff_id` differs from the source's.
  bool reordered = false;
  // With `reordered`, the blob bytes [0, prefetch_length) hold exactly the frames of the
  // prioritized entries (headers and payloads); 0 otherwise.
  uint64_t prefetch_length = 0;
  std::vector<std::string> missing_prioritized_files;

  // The three io.github.containers.zstd-chunked.* layer annotations, plus
  // dev.lazypull.prefetch-range when `prefetch_length` > 0.
  std::map<std::string, std::string> Annotations() const;
};

// The 64-byte footer payload (without its skippable-frame header).
std::string ZstdChunkedFooter(const ZstdChunkedResult& r);

// Writes the zstd:chunked form of the tar in `tar` (indexed by `index`) to `out` and
// finishes `out`. Errors: InvalidArgument for names that are not UTF-8 or bad options; read
// and write errors keep their context.
absl::StatusOr<ZstdChunkedResult> WriteZstdChunked(BlobReader& tar, const tar::TarIndex& index,
                                                   const ZstdChunkedOptions& options,
                                                   BlobSink& out);

// CRC-64/ISO as tar-split stores per-file payload checksums (Go hash/crc64 ISO table).
uint64_t Crc64Iso(uint64_t crc, std::string_view data);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_ZSTD_CHUNKED_WRITER_H_
