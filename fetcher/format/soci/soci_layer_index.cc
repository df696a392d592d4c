#include "fetcher/format/soci/soci_layer_index.h"

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fetcher/format/gzip_spans.h"
#include "fetcher/format/soci/fine_windows.h"
#include "fetcher/format/soci/span_inflater.h"
#include "fetcher/format/soci/span_slices.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

using format::Chunk;
using format::ChunkCompression;

// The window of a checkpoint at the stream's start.
std::string_view ZeroWindow() {
  static const std::string* const kZeros = new std::string(kWindowSize, '\0');
  return *kZeros;
}

// Inflates the spans of one zTOC, and describes them (for EROFS layouts and graduation).
class ZtocSpanDecoder : public format::SpanDecoder, public format::GzipSpans {
 public:
  ZtocSpanDecoder(std::shared_ptr<const Ztoc> ztoc, std::shared_ptr<const SpanWindows> windows)
      : ztoc_(std::move(ztoc)), windows_(std::move(windows)) {
    by_offset_.reserve(ztoc_->span_count());
    for (size_t i = 0; i < ztoc_->span_count(); ++i) {
      by_offset_.emplace_back(ztoc_->SpanCompressedRange(i).offset, i);
    }
    std::sort(by_offset_.begin(), by_offset_.end());
  }

  absl::StatusOr<std::string> Inflate(const Chunk& chunk,
                                      std::string_view compressed) const override {
    std::optional<size_t> span = SpanOf(chunk);
    if (!span) {
      return absl::InvalidArgumentError(fmt::format("no SOCI span at blob range [{}, +{})",
                                                    chunk.compressed_offset,
                                                    chunk.compressed_length));
    }
    const uint64_t length = ztoc_->SpanUncompressedRange(*span).length;
    Checkpoint checkpoint = ztoc_->checkpoints.at(*span);
    std::shared_ptr<const std::string> window;
    if (windows_ != nullptr && checkpoint.uncompressed_offset == 0) {
      // The stream's start: nothing precedes it for a back-reference to reach, so the window
      // is the builder's empty one (zeros) and needs no round trip (a layer's first span holds
      // /etc, which every container start reads).
      checkpoint.window = ZeroWindow();
    } else if (windows_ != nullptr) {
      // Verified against its sha256 before it is returned.
      absl::StatusOr<std::shared_ptr<const std::string>> w = windows_->Window(*span);
      if (!w.ok()) {
        return absl::Status(w.status().code(),
                            fmt::format("span {}: {}", *span, std::string(w.status().message())));
      }
      window = *std::move(w);
      checkpoint.window = *window;
    }
    absl::StatusOr<std::string> bytes = InflateSpan(
        checkpoint, compressed, length, {.expect_block_end = *span + 1 < ztoc_->span_count()});
    if (!bytes.ok()) {
      return absl::Status(bytes.status().code(),
                          fmt::format("span {}: {}", *span, std::string(bytes.status().message())));
    }
    if (windows_ != nullptr && *span + 1 < ztoc_->span_count()) {
      // The next checkpoint's window is the 32 KiB of output before it: this span's tail,
      // behind this span's own window when the span is shorter.
      std::string next;
      if (bytes->size() >= kWindowSize) {
        next.assign(*bytes, bytes->size() - kWindowSize, kWindowSize);
      } else {
        next.assign(checkpoint.window.substr(bytes->size()));
        next.append(*bytes);
      }
      windows_->Offer(*span + 1, std::move(next));
    }
    return bytes;
  }

  void WillFetch(std::span<const Chunk* const> chunks) const override {
    if (windows_ == nullptr) return;
    std::vector<size_t> spans;
    for (const Chunk* c : chunks) {
      std::optional<size_t> span = SpanOf(*c);
      if (span && ztoc_->checkpoints.at(*span).uncompressed_offset != 0) spans.push_back(*span);
    }
    if (!spans.empty()) windows_->Warm(spans);
  }

  size_t span_count() const override { return ztoc_->span_count(); }
  format::GzipSpan span(size_t i) const override {
    return {.compressed = ztoc_->SpanCompressedRange(i),
            .uncompressed = ztoc_->SpanUncompressedRange(i),
            .digest = ztoc_->span_digests.at(i)};
  }
  uint64_t uncompressed_size() const override { return ztoc_->uncompressed_archive_size; }
  std::optional<uint64_t> UncompressedOffset(const Chunk& chunk) const override {
    std::optional<size_t> span = SpanOf(chunk);
    if (!span) return std::nullopt;
    return ztoc_->SpanUncompressedRange(*span).offset + chunk.inner_offset;
  }

 private:
  // The span whose compressed range is exactly the chunk's.
  std::optional<size_t> SpanOf(const Chunk& chunk) const {
    auto it = std::lower_bound(by_offset_.begin(), by_offset_.end(),
                               std::make_pair(chunk.compressed_offset, size_t{0}));
    for (; it != by_offset_.end() && it->first == chunk.compressed_offset; ++it) {
      if (ztoc_->SpanCompressedRange(it->second).length == chunk.compressed_length) {
        return it->second;
      }
    }
    return std::nullopt;
  }

  const std::shared_ptr<const Ztoc> ztoc_;
  const std::shared_ptr<const SpanWindows> windows_;    // null: the zTOC holds the windows
  std::vector<std::pair<uint64_t, size_t>> by_offset_;  // (compressed start, span), sorted
};

format::EntryMeta MetaOf(const ZtocFile& f) {
  format::EntryMeta meta;
  meta.permissions = static_cast<uint32_t>(f.mode) & 07777;
  meta.uid = f.uid;
  meta.gid = f.gid;
  meta.mtime_sec = f.mtime_sec;
  meta.mtime_nsec = f.mtime_nsec;
  // An empty PAX value deletes the keyword (POSIX pax): dropped as lazypull's tar scanner (and
  // so every other lazy format) drops it.
  for (auto& [name, value] : f.Xattrs()) {
    if (!value.empty()) meta.xattrs.emplace_back(std::move(name), std::move(value));
  }
  return meta;
}

}  // namespace

absl::StatusOr<format::LayerIndex> BuildSociLayerIndex(const std::shared_ptr<const Ztoc>& ztoc,
                                                       const Digest& ztoc_digest,
                                                       const format::IndexBuildOptions& options,
                                                       std::shared_ptr<const SpanWindows> windows) {
  if (ztoc == nullptr) return absl::InvalidArgumentError("BuildSociLayerIndex: no zTOC");
  format::LayerIndexBuilder builder(format::LayerFormat::kSoci, options);
  builder.SetSpanDecoder(std::make_shared<const ZtocSpanDecoder>(ztoc, std::move(windows)));
  for (const ZtocFile& f : ztoc->files) {
    const format::EntryMeta meta = MetaOf(f);
    absl::Status st;
    if (f.type == "dir") {
      st = builder.AddDirectory(f.name, meta);
    } else if (f.type == "reg") {
      std::vector<Chunk> chunks;
      for (const SpanSlice& s : SlicesForRange(*ztoc, f.uncompressed_offset, f.uncompressed_size)) {
        const ByteRange range = ztoc->SpanCompressedRange(s.span);
        Chunk c;
        c.compressed_offset = range.offset;
        c.compressed_length = range.length;
        c.file_offset = s.range_offset;
        c.length = s.length;
        c.inner_offset = s.span_offset;
        const std::string& raw = ztoc->span_digests[s.span].Raw();
        if (raw.size() != c.digest.size()) {
          return absl::InvalidArgumentError(
              fmt::format("ztoc: span {} digest is not sha256", s.span));
        }
        std::copy(raw.begin(), raw.end(), c.digest.begin());
        c.has_digest = true;
        c.compression = ChunkCompression::kGzipSpan;
        chunks.push_back(c);
      }
      if (f.uncompressed_size > 0 && chunks.empty()) {
        return absl::InvalidArgumentError(fmt::format("ztoc: file \"{}\" [{}, +{}) lies in no span",
                                                      f.name.substr(0, 512), f.uncompressed_offset,
                                                      f.uncompressed_size));
      }
      st = builder.AddRegular(f.name, meta, f.uncompressed_size, std::move(chunks));
    } else if (f.type == "symlink") {
      st = builder.AddSymlink(f.name, meta, f.linkname);
    } else if (f.type == "hardlink") {
      st = builder.AddHardlink(f.name, f.linkname);
    } else if (f.type == "char" || f.type == "block") {
      st = builder.AddDevice(f.name, meta, f.type == "char" ? S_IFCHR : S_IFBLK,
                             static_cast<uint32_t>(f.devmajor), static_cast<uint32_t>(f.devminor));
    } else if (f.type == "fifo") {
      st = builder.AddFifo(f.name, meta);
    } else {
      st = absl::InvalidArgumentError(
          fmt::format("ztoc: file \"{}\" has unknown type \"{}\"", f.name.substr(0, 512), f.type));
    }
    if (!st.ok()) return st;
  }
  return builder.Finish(ztoc_digest, ztoc->compressed_archive_size, ztoc->compressed_archive_size);
}

}  // namespace lazypull::soci
