// BuildZtoc: the SOCI zTOC of an unmodified gzip layer, from one front-to-back pass over the
// blob (memory independent of the layer size, but for the 32 KiB per checkpoint the zTOC
// itself holds). The result is what soci-snapshotter's `soci create` would make of the same
// blob: the same checkpoints (same rule, see CheckpointingInflater), span digests, one entry per
// tar member in stream order with its payload offset — unless `large_file_spans` is set, which
// adds checkpoints around large files (below). Differences, all invisible to readers:
// a PAX global header is skipped (soci refuses such layers), PAX records other than
// SCHILY.xattr.* are not kept (soci keeps them all; readers use only the xattrs), and
// mod_time is always written in UTC.
//
// Thread-safe (no shared state); `layer` is read sequentially.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_BUILDER_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_BUILDER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/ztoc.h"
#include "fetcher/tar/tar_scanner.h"
#include "lazypull/blob_reader.h"

namespace lazypull::soci {

// soci's defaults.
inline constexpr uint64_t kDefaultSpanSize = 4ull << 20;
inline constexpr uint64_t kDefaultMinLayerSize = 10ull << 20;

struct ZtocBuildOptions {
  // Uncompressed bytes between checkpoints (a checkpoint lands on the first deflate block
  // boundary past it).
  uint64_t span_size = kDefaultSpanSize;
  // 0: soci's checkpoints exactly. Else files of at least this many bytes get checkpoints at
  // the first block boundaries at or after their start and their end, so the small files
  // around a large one do not share a span with its bytes: a read of a small file then moves
  // the small files' span, not megabytes of the large file (a span is fetched and verified
  // whole). Costs up to two checkpoints (32 KiB each in the zTOC) per such file.
  uint64_t large_file_spans = 0;
  std::string build_tool_identifier = "lazypull";
  tar::ScanOptions scan{};
  size_t read_size = 1 << 20;  // bytes per read of `layer`
  // When set, each checkpoint's window goes to it (checkpoint index, 32 KiB window) as the
  // checkpoint is found, and the zTOC gets lazypull's windowless checkpoints
  // (ZinfoCheckpoints::ParseWindowless: a fine index's, fine_index.h): memory stays
  // independent of the number of checkpoints.
  std::function<void(size_t, std::string_view)> window_sink{};
};

// Errors: DataLoss for a corrupt or truncated gzip stream or tar (messages name the offset),
// Unimplemented for tar members soci cannot describe (sparse files), the reader's errors.
absl::StatusOr<Ztoc> BuildZtoc(BlobReader& layer, const ZtocBuildOptions& options = {});

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_BUILDER_H_
