#include "mount/erofs/tar_rebuilder.h"

#include <zstd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fmt/format.h"

namespace lazypull::mount::erofs {
namespace {

using format::Chunk;
using format::Ino;

constexpr size_t kBatchRanges = 512;
// Gap frames are tar headers and padding: a larger declared window is refused, not allocated.
constexpr int kMaxGapWindowLog = 24;
constexpr size_t kDecodeOutBytes = 256 << 10;

// One stretch of the compressed blob in order: a chunk's frame, or a piece (at most
// kGraduationPieceBytes) of the frames between chunks.
struct Piece {
  ByteRange range;
  const Chunk* chunk = nullptr;  // null = gap piece
  Ino ino = 0;
  bool gap_start = false;  // first piece of its gap
  bool gap_end = false;    // last piece of its gap
};

// Streams the zstd frames of one gap (several frames, skippable ones skipped) into `out`.
class GapDecoder {
 public:
  GapDecoder() : ds_(ZSTD_createDStream(), &ZSTD_freeDStream), buf_(kDecodeOutBytes) {}

  absl::Status Start() {
    if (ds_ == nullptr) return absl::ResourceExhaustedError("cannot allocate a zstd decoder");
    ZSTD_DCtx_reset(ds_.get(), ZSTD_reset_session_only);
    ZSTD_DCtx_setParameter(ds_.get(), ZSTD_d_windowLogMax, kMaxGapWindowLog);
    at_boundary_ = true;
    return absl::OkStatus();
  }

  absl::Status Feed(std::string_view data, ZeroAwareSink& out) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      ZSTD_outBuffer o{buf_.data(), buf_.size(), 0};
      const size_t ret = ZSTD_decompressStream(ds_.get(), &o, &in);
      if (ZSTD_isError(ret)) {
        return absl::DataLossError(fmt::format("tar header frames: {}", ZSTD_getErrorName(ret)));
      }
      at_boundary_ = ret == 0;
      if (o.pos > 0) {
        if (absl::Status s = out.Append(std::string_view(buf_.data(), o.pos)); !s.ok()) return s;
      }
    }
    // Flush what the decoder still holds for the input already given.
    for (;;) {
      ZSTD_outBuffer o{buf_.data(), buf_.size(), 0};
      ZSTD_inBuffer none{nullptr, 0, 0};
      const size_t ret = ZSTD_decompressStream(ds_.get(), &o, &none);
      if (ZSTD_isError(ret)) {
        return absl::DataLossError(fmt::format("tar header frames: {}", ZSTD_getErrorName(ret)));
      }
      // An empty call at a frame boundary already looks for the next frame (ret > 0): only
      // calls that produced output tell where the input ended.
      if (o.pos == 0) {
        if (ret == 0) at_boundary_ = true;
        break;
      }
      at_boundary_ = ret == 0;
      if (absl::Status s = out.Append(std::string_view(buf_.data(), o.pos)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Whether the input so far ended exactly at a frame boundary.
  bool at_boundary() const { return at_boundary_; }

 private:
  std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> ds_;
  std::vector<char> buf_;
  bool at_boundary_ = true;
};

absl::StatusOr<std::vector<Piece>> PlanPieces(const format::LayerIndex& index, uint64_t blob_size) {
  std::vector<Piece> chunks;
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    for (const Chunk& c : index.Chunks(ino)) {
      chunks.push_back({.range = c.compressed_range(), .chunk = &c, .ino = ino});
    }
  }
  std::sort(chunks.begin(), chunks.end(),
            [](const Piece& a, const Piece& b) { return a.range.offset < b.range.offset; });
  std::vector<Piece> pieces;
  auto add_gap = [&](uint64_t begin, uint64_t end) {
    for (uint64_t at = begin; at < end; at += kGraduationPieceBytes) {
      const uint64_t len = std::min<uint64_t>(kGraduationPieceBytes, end - at);
      pieces.push_back({.range = {at, len}, .gap_start = at == begin, .gap_end = at + len == end});
    }
  };
  uint64_t pos = 0;
  for (const Piece& c : chunks) {
    if (c.range.offset < pos || c.range.length == 0) {
      return absl::FailedPreconditionError(fmt::format(
          "chunk frames overlap at blob offset {} ({})", c.range.offset, index.Path(c.ino)));
    }
    add_gap(pos, c.range.offset);
    pieces.push_back(c);
    pos = c.range.end();
  }
  // After the data area come only skippable frames (manifest, tar-split, footer): they add no
  // tar bytes, and the manifest was fetched when the layer was opened.
  const uint64_t data_end = index.data_range().length;
  add_gap(pos, data_end > 0 ? std::min(data_end, blob_size) : blob_size);
  return pieces;
}

// Appends chunk `c` of file `ino`: a zero run, or its bytes read in pieces into `buf`.
absl::Status AppendChunk(LayerReader& reader, Ino ino, const Chunk& c, std::vector<char>& buf,
                         ZeroAwareSink& out, const std::atomic<bool>& cancel, RebuildStats& stats) {
  if (c.compression == format::ChunkCompression::kZeros) {
    stats.zero_bytes += c.length;
    return out.AppendZeros(c.length);
  }
  for (uint64_t done = 0; done < c.length;) {
    if (cancel) return absl::CancelledError("graduation cancelled");
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), c.length - done));
    absl::StatusOr<size_t> n = reader.Read(ino, c.file_offset + done, buf.data(), want);
    if (!n.ok()) return n.status();
    if (*n != want) {
      return absl::DataLossError(fmt::format("{}: short read of the chunk at offset {}",
                                             reader.index().Path(ino), c.file_offset));
    }
    if (absl::Status s = out.Append(std::string_view(buf.data(), want)); !s.ok()) return s;
    done += want;
    stats.local_bytes += want;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RebuildStats> RebuildZstdChunkedTar(LayerReader& reader, BlobReader& blob,
                                                   ZeroAwareSink& out,
                                                   const std::atomic<bool>& cancel) {
  const format::LayerIndex& index = reader.index();
  if (index.format() != format::LayerFormat::kZstdChunked) {
    return absl::FailedPreconditionError("only zstd:chunked layers can be rebuilt from chunks");
  }
  absl::StatusOr<std::vector<Piece>> planned = PlanPieces(index, blob.Size());
  if (!planned.ok()) return planned.status();
  const std::vector<Piece>& pieces = *planned;

  RebuildStats stats;
  std::vector<char> buf(kGraduationPieceBytes);
  GapDecoder decoder;
  for (size_t first = 0; first < pieces.size();) {
    // One batch: consecutive pieces whose gap pieces add up to at most kRebuildBatchBytes.
    size_t last = first;
    uint64_t gap_bytes = 0;
    std::vector<ByteRange> ranges;
    for (; last < pieces.size(); ++last) {
      if (pieces[last].chunk != nullptr) continue;
      if (!ranges.empty() && (gap_bytes + pieces[last].range.length > kRebuildBatchBytes ||
                              ranges.size() >= kBatchRanges)) {
        break;
      }
      ranges.push_back(pieces[last].range);
      gap_bytes += pieces[last].range.length;
    }
    std::vector<std::string> gaps(ranges.size());
    if (!ranges.empty()) {
      std::mutex mu;
      absl::Status st = blob.StreamRanges(ranges, [&](uint64_t offset, std::string_view data) {
        if (cancel) return absl::CancelledError("graduation cancelled");
        // Ranges are sorted and disjoint: find the one `offset` falls in.
        auto it = std::upper_bound(ranges.begin(), ranges.end(), offset,
                                   [](uint64_t o, const ByteRange& r) { return o < r.offset; });
        if (it == ranges.begin()) return absl::DataLossError("blob bytes outside the ranges");
        const size_t i = static_cast<size_t>(it - ranges.begin()) - 1;
        std::lock_guard<std::mutex> lock(mu);  // different ranges may arrive concurrently
        if (gaps[i].size() + data.size() > ranges[i].length) {
          return absl::DataLossError(fmt::format("too many bytes for blob range [{}, +{})",
                                                 ranges[i].offset, ranges[i].length));
        }
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
      if (piece.chunk != nullptr) {
        absl::Status s = AppendChunk(reader, piece.ino, *piece.chunk, buf, out, cancel, stats);
        if (!s.ok()) return s;
        continue;
      }
      std::string& bytes = gaps[gap++];
      if (bytes.size() != piece.range.length) {
        return absl::DataLossError(fmt::format("short read of blob range [{}, +{})",
                                               piece.range.offset, piece.range.length));
      }
      if (piece.gap_start) {
        if (absl::Status s = decoder.Start(); !s.ok()) return s;
      }
      if (absl::Status s = decoder.Feed(bytes, out); !s.ok()) return s;
      std::string().swap(bytes);
      if (piece.gap_end && !decoder.at_boundary()) {
        return absl::DataLossError(fmt::format(
            "the frames between chunks end mid-frame at blob offset {}", piece.range.end()));
      }
    }
    first = last;
  }
  return stats;
}

}  // namespace lazypull::mount::erofs
