#include "mount/erofs/tar_rebuilder.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "fetcher/codec/zstd.h"
#include "fmt/format.h"

namespace lazypull::mount::erofs {
namespace {

using format::Chunk;
using format::Ino;

// Gap bytes fetched per StreamRanges call (bounds memory; a few requests per layer).
constexpr uint64_t kBatchBytes = 16 << 20;
constexpr size_t kBatchRanges = 512;
// A gap decompresses to tar headers/padding, or to nothing (skippable frames).
constexpr uint64_t kMaxGapOutput = 256 << 20;

// One stretch of the compressed blob in order: a chunk's frame, or the frames between chunks.
struct Piece {
  ByteRange range;
  const Chunk* chunk = nullptr;  // null = gap
  Ino ino = 0;
};

}  // namespace

absl::StatusOr<RebuildStats> RebuildZstdChunkedTar(LayerReader& reader, BlobReader& blob,
                                                   convert::BlobSink& out,
                                                   const std::atomic<bool>& cancel) {
  const format::LayerIndex& index = reader.index();
  if (index.format() != format::LayerFormat::kZstdChunked) {
    return absl::FailedPreconditionError("only zstd:chunked layers can be rebuilt from chunks");
  }
  std::vector<Piece> chunks;
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    for (const Chunk& c : index.Chunks(ino)) {
      chunks.push_back({.range = c.compressed_range(), .chunk = &c, .ino = ino});
    }
  }
  std::sort(chunks.begin(), chunks.end(),
            [](const Piece& a, const Piece& b) { return a.range.offset < b.range.offset; });
  std::vector<Piece> pieces;
  uint64_t pos = 0;
  for (const Piece& c : chunks) {
    if (c.range.offset < pos || c.range.length == 0) {
      return absl::FailedPreconditionError(fmt::format(
          "chunk frames overlap at blob offset {} ({})", c.range.offset, index.Path(c.ino)));
    }
    if (c.range.offset > pos) pieces.push_back({.range = {pos, c.range.offset - pos}});
    pieces.push_back(c);
    pos = c.range.end();
  }
  if (pos < blob.Size()) pieces.push_back({.range = {pos, blob.Size() - pos}});

  RebuildStats stats;
  std::vector<char> buf;
  for (size_t first = 0; first < pieces.size();) {
    // One batch: consecutive pieces whose gaps add up to at most kBatchBytes (at least one).
    size_t last = first;
    uint64_t gap_bytes = 0;
    std::vector<ByteRange> ranges;
    for (; last < pieces.size(); ++last) {
      if (pieces[last].chunk != nullptr) continue;
      if (!ranges.empty() &&
          (gap_bytes + pieces[last].range.length > kBatchBytes || ranges.size() >= kBatchRanges)) {
        break;
      }
      ranges.push_back(pieces[last].range);
      gap_bytes += pieces[last].range.length;
    }
    std::vector<std::string> gaps(ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) gaps[i].reserve(ranges[i].length);
    if (!ranges.empty()) {
      std::mutex mu;
      absl::Status st = blob.StreamRanges(ranges, [&](uint64_t offset, std::string_view data) {
        if (cancel) return absl::CancelledError("graduation cancelled");
        // Ranges are sorted and disjoint: find the one `offset` falls in.
        auto it = std::upper_bound(ranges.begin(), ranges.end(), offset,
                                   [](uint64_t o, const ByteRange& r) { return o < r.offset; });
        const size_t i = static_cast<size_t>(it - ranges.begin()) - 1;
        std::lock_guard<std::mutex> lock(mu);  // different ranges may arrive concurrently
        gaps[i].append(data);
        return absl::OkStatus();
      });
      if (!st.ok()) return st;
      stats.fetched_bytes += gap_bytes;
    }
    size_t gap = 0;
    for (size_t p = first; p < last; ++p) {
      if (cancel) return absl::CancelledError("graduation cancelled");
      const Piece& piece = pieces[p];
      if (piece.chunk == nullptr) {
        if (gaps[gap].size() != piece.range.length) {
          return absl::DataLossError(fmt::format("short read of blob range [{}, +{})",
                                                 piece.range.offset, piece.range.length));
        }
        absl::StatusOr<std::string> tar =
            codec::ZstdDecompress(gaps[gap++], {.max_output = kMaxGapOutput});
        if (!tar.ok()) return tar.status();
        if (absl::Status s = out.Append(*tar); !s.ok()) return s;
        continue;
      }
      const Chunk& c = *piece.chunk;
      if (c.compression == format::ChunkCompression::kZeros) {
        buf.assign(c.length, '\0');
      } else {
        buf.resize(c.length);
        absl::StatusOr<size_t> n = reader.Read(piece.ino, c.file_offset, buf.data(), c.length);
        if (!n.ok()) return n.status();
        if (*n != c.length) return absl::DataLossError("short chunk read");
      }
      stats.local_bytes += c.length;
      if (absl::Status s = out.Append(std::string_view(buf.data(), c.length)); !s.ok()) return s;
    }
    first = last;
  }
  return stats;
}

}  // namespace lazypull::mount::erofs
