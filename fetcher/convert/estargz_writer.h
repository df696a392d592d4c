// WriteEstargz: turns an uncompressed layer tar into an eStargz blob (stargz-snapshotter
// docs/estargz.md), readable as a plain tar.gz by any client.
//
// Layout: a chain of gzip members; a new member starts at every non-empty regular file's
// payload and at every `chunk_size` bytes within it, so each payload chunk can be fetched and
// gunzipped on its own. Header blocks are copied verbatim from the source tar (PAX/GNU
// extensions included). Entries are ordered as the reference builder orders them
// (OrderEntries, entry_order.h): prioritized files (with their parent directories and
// hardlink targets) first, then
// `.prefetch.landmark` — or `.no.prefetch.landmark` when nothing is prioritized — then the
// rest. Duplicate names keep only the last occurrence; existing landmarks and TOC entries
// are dropped. The TOC `stargz.index.json` is the last entry, in its own member, followed by
// the 51-byte footer.
#ifndef LAZYPULL_FETCHER_CONVERT_ESTARGZ_WRITER_H_
#define LAZYPULL_FETCHER_CONVERT_ESTARGZ_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/tar/tar_scanner.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::convert {

inline constexpr char kEstargzTocName[] = "stargz.index.json";
inline constexpr char kPrefetchLandmark[] = ".prefetch.landmark";
inline constexpr char kNoPrefetchLandmark[] = ".no.prefetch.landmark";
inline constexpr char kEstargzTocDigestAnnotation[] = "containerd.io/snapshot/stargz/toc.digest";
inline constexpr char kEstargzUncompressedSizeAnnotation[] =
    "io.containers.estargz.uncompressed-size";
inline constexpr uint64_t kEstargzFooterSize = 51;
inline constexpr uint64_t kDefaultEstargzChunkSize = 4ull << 20;  // as the reference

struct EstargzOptions {
  // Largest payload span per gzip member. Must be > 0.
  uint64_t chunk_size = kDefaultEstargzChunkSize;
  // libdeflate level 1..12.
  int gzip_level = 6;
  // Paths (absolute or relative to the layer root) to put first, in this order.
  std::vector<std::string> prioritized_files;
  // If false, a prioritized path absent from the layer is NotFound; if true it is recorded in
  // EstargzResult::missing_prioritized_files (a multi-layer image has each file in one layer).
  bool allow_missing_prioritized = true;
};

struct EstargzResult {
  Digest blob_digest;
  uint64_t blob_size = 0;
  Digest toc_digest;  // sha256 of the uncompressed TOC JSON
  Digest diff_id;     // sha256 of the whole uncompressed stream
  uint64_t uncompressed_size = 0;
  uint64_t toc_offset = 0;  // of the TOC's gzip member
  std::vector<std::string> missing_prioritized_files;
};

// The 51-byte footer pointing at a TOC member at `toc_offset`.
std::string EstargzFooter(uint64_t toc_offset);

// Writes the eStargz form of the tar in `tar` (indexed by `index`, see tar::ScanTar) to
// `out` and finishes `out`. Errors: InvalidArgument for names that are not UTF-8 or a zero
// chunk size, NotFound for a missing prioritized file (if not allowed), and any read/write
// error with its context. Not thread-safe with respect to `out`.
absl::StatusOr<EstargzResult> WriteEstargz(BlobReader& tar, const tar::TarIndex& index,
                                           const EstargzOptions& options, BlobSink& out);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_ESTARGZ_WRITER_H_
