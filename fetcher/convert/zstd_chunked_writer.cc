#include "fetcher/convert/zstd_chunked_writer.h"

#include <algorithm>
#include <array>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/convert/entry_order.h"
#include "fetcher/convert/frame_compressor.h"
#include "fetcher/convert/toc_util.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::convert {
namespace {

using tar::EntryType;
using tar::TarEntry;

constexpr uint64_t kCopyPiece = 1 << 20;

// The bup/perkeep rolling checksum containers/storage splits chunks with.
class RollSum {
 public:
  void Roll(uint8_t ch) {
    uint32_t drop = window_[wofs_];
    s1_ += ch - drop;
    s2_ += s1_ - kWindow * (drop + kCharOffset);
    window_[wofs_] = ch;
    wofs_ = (wofs_ + 1) & (kWindow - 1);
  }
  bool OnSplit(int bits) const {
    uint32_t mask = (1u << bits) - 1;
    return (s2_ & mask) == mask;
  }

 private:
  static constexpr uint32_t kWindow = 64, kCharOffset = 31;
  uint32_t s1_ = kWindow * kCharOffset;
  uint32_t s2_ = kWindow * (kWindow - 1) * kCharOffset;
  std::array<uint8_t, kWindow> window_{};
  uint32_t wofs_ = 0;
};

const std::array<uint64_t, 256>& Crc64Table() {
  static const std::array<uint64_t, 256> table = [] {
    std::array<uint64_t, 256> t{};
    constexpr uint64_t kPoly = 0xD800000000000000ull;  // ISO, reversed
    for (uint64_t i = 0; i < 256; ++i) {
      uint64_t crc = i;
      for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ kPoly : crc >> 1;
      t[i] = crc;
    }
    return t;
  }();
  return table;
}

struct Chunk {
  uint64_t chunk_offset = 0;  // in the file
  uint64_t offset = 0;        // of its zstd frame in the blob
  uint64_t size = 0;
  std::string digest;
  bool zeros = false;
};

class Writer {
 public:
  Writer(BlobReader& tar, const ZstdChunkedOptions& options, BlobSink& out)
      : tar_(tar), options_(options), out_(out), zstd_(options.zstd_level) {}

  // Write order differs from stream order (prioritized entries first).
  void set_reordered() { reordered_ = true; }

  absl::Status WriteEntry(const TarEntry& e) {
    // The padding after the previous entry written and this entry's header blocks: one
    // contiguous source range, unless entries were reordered.
    if (!reordered_ || pad_end_ == e.header_offset) {
      if (auto st = CopyRaw(pos_, e.payload_offset, /*segment=*/true); !st.ok()) return st;
    } else {
      if (auto st = CopyRaw(pos_, pad_end_, /*segment=*/true); !st.ok()) return st;
      if (auto st = CopyRaw(e.header_offset, e.payload_offset, /*segment=*/true); !st.ok()) {
        return st;
      }
    }
    pos_ = e.payload_offset;
    pad_end_ = e.end_offset();
    if (auto st = CheckUtf8(e.name, "tar entry name"); !st.ok()) return st;

    nlohmann::ordered_json split;
    split["type"] = 1;
    split["name"] = e.name;
    if (e.payload_size > 0) split["size"] = e.payload_size;

    if (e.type == EntryType::kGlobalHeader) {
      uint64_t crc = 0;
      for (uint64_t p = e.payload_offset; p < e.payload_offset + e.payload_size;) {
        uint64_t n = std::min(kCopyPiece, e.payload_offset + e.payload_size - p);
        auto data = tar_.ReadAt(p, n);
        if (!data.ok()) return data.status();
        crc = Crc64Iso(crc, *data);
        Account(*data);
        frame_.append(*data);
        p += n;
      }
      AddTarSplitFile(std::move(split), e.payload_size > 0, crc);
      pos_ = e.payload_offset + e.payload_size;
      return absl::OkStatus();
    }
    if (auto st = CheckUtf8(e.linkname, "link target of " + e.name); !st.ok()) return st;

    nlohmann::ordered_json j;
    j["type"] = TocType(e.type);
    j["name"] = e.name;
    if (!e.linkname.empty()) j["linkName"] = e.linkname;
    if (e.mode != 0) j["mode"] = e.mode;
    if (e.type == EntryType::kRegular && e.payload_size > 0) j["size"] = e.payload_size;
    if (e.uid != 0) j["uid"] = e.uid;
    if (e.gid != 0) j["gid"] = e.gid;
    j["modtime"] = FormatRfc3339Nano(e.mtime);
    if (e.atime) j["accesstime"] = FormatRfc3339Nano(*e.atime);
    if (e.ctime) j["changetime"] = FormatRfc3339Nano(*e.ctime);
    if (e.devmajor != 0) j["devMajor"] = e.devmajor;
    if (e.devminor != 0) j["devMinor"] = e.devminor;
    if (!e.xattrs.empty()) {
      nlohmann::ordered_json x = nlohmann::ordered_json::object();
      for (const auto& [k, v] : e.xattrs) {
        if (auto st = CheckUtf8(k, "xattr name on " + e.name); !st.ok()) return st;
        x[k] = absl::Base64Escape(v);
      }
      j["xattrs"] = std::move(x);
    }

    uint64_t crc = 0;
    if (e.payload_size > 0) {
      if (auto st = FlushFrame(); !st.ok()) return st;
      chunks_.clear();
      file_sha_.emplace();
      rollsum_ = RollSum();
      cur_len_ = 0;
      zero_run_ = 0;
      hole_ = false;
      file_written_ = 0;
      chunk_start_offset_ = out_.size();
      for (uint64_t p = e.payload_offset; p < e.payload_offset + e.payload_size;) {
        uint64_t n = std::min(kCopyPiece, e.payload_offset + e.payload_size - p);
        auto data = tar_.ReadAt(p, n);
        if (!data.ok()) return data.status();
        crc = Crc64Iso(crc, *data);
        Account(*data);
        if (auto st = ChunkPiece(*data); !st.ok()) return st;
        p += n;
      }
      if (cur_len_ > 0) {
        if (auto st = EndChunk(hole_); !st.ok()) return st;
      }
      j["digest"] = file_sha_->Finish().ToString();
      j["offset"] = chunks_.front().offset;
      j["endOffset"] = out_.size();
      if (chunks_.size() > 1) {
        const Chunk& c0 = chunks_.front();
        j["chunkSize"] = c0.size;
        j["chunkDigest"] = c0.digest;
        if (c0.zeros) j["chunkType"] = "zeros";
      }
      toc_.push_back(std::move(j));
      for (size_t i = 1; chunks_.size() > 1 && i < chunks_.size(); ++i) {
        const Chunk& c = chunks_[i];
        nlohmann::ordered_json cj;
        cj["type"] = "chunk";
        cj["name"] = e.name;
        cj["offset"] = c.offset;
        cj["chunkSize"] = c.size;
        cj["chunkOffset"] = c.chunk_offset;
        cj["chunkDigest"] = c.digest;
        if (c.zeros) cj["chunkType"] = "zeros";
        toc_.push_back(std::move(cj));
      }
    } else {
      toc_.push_back(std::move(j));
    }
    AddTarSplitFile(std::move(split), e.payload_size > 0, crc);
    pos_ = e.payload_offset + e.payload_size;
    return absl::OkStatus();
  }

  absl::StatusOr<ZstdChunkedResult> Finish(const tar::TarIndex& index) {
    // Padding of the last entry, the end-of-archive blocks and any record padding, in
    // tar-split segments of at most 1 MiB as the reference does.
    if (!reordered_ || pad_end_ == index.trailer_offset) {
      if (auto st = CopyRaw(pos_, index.stream_size, /*segment=*/true); !st.ok()) return st;
    } else {
      if (auto st = CopyRaw(pos_, pad_end_, /*segment=*/true); !st.ok()) return st;
      auto st = CopyRaw(index.trailer_offset, index.stream_size, /*segment=*/true);
      if (!st.ok()) return st;
    }
    if (auto st = FlushFrame(); !st.ok()) return st;
    ZstdChunkedResult r;
    r.reordered = reordered_;
    r.diff_id = diff_sha_.Finish();
    r.uncompressed_size = uncompressed_size_;

    auto split = zstd_.Compress(tarsplit_);
    if (!split.ok()) return split.status();
    nlohmann::ordered_json toc;
    toc["version"] = 1;
    toc["entries"] = std::move(toc_);
    toc["tarSplitDigest"] = Digest::Of(*split).ToString();
    std::string manifest = toc.dump();
    auto compressed = zstd_.Compress(manifest);
    if (!compressed.ok()) return compressed.status();
    r.manifest_checksum = Digest::Of(*compressed);
    r.manifest_offset = out_.size() + codec::kZstdSkippableHeaderSize;
    r.manifest_length = compressed->size();
    r.manifest_uncompressed_length = manifest.size();
    r.tarsplit_offset = r.manifest_offset + r.manifest_length + codec::kZstdSkippableHeaderSize;
    r.tarsplit_length = split->size();
    r.tarsplit_uncompressed_length = tarsplit_.size();
    for (const std::string* payload : {&*compressed, &*split}) {
      auto frame = codec::ZstdSkippableFrame(*payload);
      if (!frame.ok()) return frame.status();
      if (auto st = out_.Append(*frame); !st.ok()) return st;
    }
    auto footer = codec::ZstdSkippableFrame(ZstdChunkedFooter(r));
    if (!footer.ok()) return footer.status();
    if (auto st = out_.Append(*footer); !st.ok()) return st;
    r.blob_size = out_.size();
    auto digest = out_.Finish();
    if (!digest.ok()) return digest.status();
    r.blob_digest = *digest;
    return r;
  }

  // Ends the current frame (if any) and returns the blob size: where the next frame starts.
  absl::StatusOr<uint64_t> EndFrame() {
    if (auto st = FlushFrame(); !st.ok()) return st;
    return out_.size();
  }

 private:
  void Account(std::string_view data) {
    diff_sha_.Update(data);
    uncompressed_size_ += data.size();
  }

  void AddTarSplitSegment(std::string_view raw) {
    nlohmann::ordered_json s;
    s["type"] = 2;
    s["payload"] = absl::Base64Escape(absl::string_view(raw.data(), raw.size()));
    s["position"] = position_++;
    tarsplit_ += s.dump();
    tarsplit_ += '\n';
  }

  void AddTarSplitFile(nlohmann::ordered_json j, bool has_payload, uint64_t crc) {
    if (has_payload) {
      std::string be(8, '\0');
      for (int i = 0; i < 8; ++i) be[i] = static_cast<char>(crc >> (56 - 8 * i));
      j["payload"] = absl::Base64Escape(be);
    } else {
      j["payload"] = nullptr;
    }
    j["position"] = position_++;
    tarsplit_ += j.dump();
    tarsplit_ += '\n';
  }

  // Copies tar bytes [from, to) into the current frame (and tar-split segments).
  absl::Status CopyRaw(uint64_t from, uint64_t to, bool segment) {
    for (uint64_t p = from; p < to;) {
      uint64_t n = std::min(kCopyPiece, to - p);
      auto data = tar_.ReadAt(p, n);
      if (!data.ok()) return data.status();
      Account(*data);
      frame_.append(*data);
      if (segment) AddTarSplitSegment(*data);
      p += n;
    }
    return absl::OkStatus();
  }

  absl::Status FlushFrame() {
    if (frame_.empty()) return absl::OkStatus();
    auto z = zstd_.Compress(frame_);
    if (!z.ok()) return z.status();
    frame_.clear();
    return out_.Append(*z);
  }

  // Ends the chunk whose bytes are exactly frame_.
  absl::Status EndChunk(bool zeros) {
    Chunk c;
    c.chunk_offset = file_written_;
    c.offset = chunk_start_offset_;
    c.size = frame_.size();
    c.digest = Digest::Of(frame_).ToString();
    c.zeros = zeros;
    file_sha_->Update(frame_);
    file_written_ += frame_.size();
    if (auto st = FlushFrame(); !st.ok()) return st;
    chunks_.push_back(std::move(c));
    chunk_start_offset_ = out_.size();
    cur_len_ = 0;
    zero_run_ = 0;
    return absl::OkStatus();
  }

  absl::Status ChunkPiece(std::string_view p) {
    const uint64_t max = options_.max_chunk_size;
    const uint64_t threshold = options_.hole_threshold;
    size_t seg = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const uint8_t b = static_cast<uint8_t>(p[i]);
      if (hole_) {
        if (b == 0 && cur_len_ < max) {
          ++cur_len_;
          continue;
        }
        frame_.append(p.substr(seg, i - seg));
        seg = i;
        if (auto st = EndChunk(/*zeros=*/true); !st.ok()) return st;
        hole_ = false;
      }
      ++cur_len_;
      rollsum_.Roll(b);
      if (b == 0) {
        if (++zero_run_ == threshold) {
          frame_.append(p.substr(seg, i + 1 - seg));
          seg = i + 1;
          if (cur_len_ > threshold) {
            // The zeros so far end the data chunk; they start the hole instead.
            frame_.resize(frame_.size() - threshold);
            if (auto st = EndChunk(/*zeros=*/false); !st.ok()) return st;
            frame_.append(threshold, '\0');
          }
          cur_len_ = threshold;
          zero_run_ = 0;
          hole_ = true;
          continue;
        }
      } else {
        zero_run_ = 0;
      }
      if (rollsum_.OnSplit(options_.rollsum_bits) || cur_len_ >= max) {
        frame_.append(p.substr(seg, i + 1 - seg));
        seg = i + 1;
        if (auto st = EndChunk(/*zeros=*/false); !st.ok()) return st;
      }
    }
    frame_.append(p.substr(seg));
    return absl::OkStatus();
  }

  BlobReader& tar_;
  const ZstdChunkedOptions& options_;
  BlobSink& out_;
  ZstdFrameCompressor zstd_;
  bool reordered_ = false;
  uint64_t pos_ = 0;      // next source tar byte to write (padding of the last entry written)
  uint64_t pad_end_ = 0;  // end of that padding
  std::string frame_;
  Sha256 diff_sha_;
  uint64_t uncompressed_size_ = 0;
  nlohmann::ordered_json toc_ = nlohmann::ordered_json::array();
  std::string tarsplit_;
  int64_t position_ = 0;
  // Per-file chunking state.
  std::vector<Chunk> chunks_;
  std::optional<Sha256> file_sha_;
  RollSum rollsum_;
  uint64_t cur_len_ = 0, zero_run_ = 0, file_written_ = 0, chunk_start_offset_ = 0;
  bool hole_ = false;
};

}  // namespace

uint64_t Crc64Iso(uint64_t crc, std::string_view data) {
  const auto& t = Crc64Table();
  crc = ~crc;
  for (unsigned char c : data) crc = t[static_cast<uint8_t>(crc) ^ c] ^ (crc >> 8);
  return ~crc;
}

std::map<std::string, std::string> ZstdChunkedResult::Annotations() const {
  std::map<std::string, std::string> a = {
      {kZstdChunkedManifestChecksumAnnotation, manifest_checksum.ToString()},
      {kZstdChunkedManifestPositionAnnotation,
       fmt::format("{}:{}:{}:1", manifest_offset, manifest_length, manifest_uncompressed_length)},
      {kZstdChunkedTarSplitPositionAnnotation,
       fmt::format("{}:{}:{}", tarsplit_offset, tarsplit_length, tarsplit_uncompressed_length)},
  };
  if (prefetch_length > 0)
    a[kLazypullPrefetchRangeAnnotation] = fmt::format("0:{}", prefetch_length);
  return a;
}

std::string ZstdChunkedFooter(const ZstdChunkedResult& r) {
  std::string f;
  auto put = [&f](uint64_t v) {
    for (int i = 0; i < 8; ++i) f.push_back(static_cast<char>(v >> (8 * i)));
  };
  put(r.manifest_offset);
  put(r.manifest_length);
  put(r.manifest_uncompressed_length);
  put(1);  // manifest type: CRFS-compatible TOC
  put(r.tarsplit_offset);
  put(r.tarsplit_length);
  put(r.tarsplit_uncompressed_length);
  f.append(kZstdChunkedFooterMagic, 8);
  return f;
}

absl::StatusOr<ZstdChunkedResult> WriteZstdChunked(BlobReader& tar, const tar::TarIndex& index,
                                                   const ZstdChunkedOptions& options,
                                                   BlobSink& out) {
  if (options.max_chunk_size == 0 || options.rollsum_bits < 1 || options.rollsum_bits > 31 ||
      options.hole_threshold == 0) {
    return absl::InvalidArgumentError(
        "zstd:chunked options: chunk size, rollsum bits and hole "
        "threshold must be positive");
  }
  Writer w(tar, options, out);
  EntryOrder order;
  if (!options.prioritized_files.empty()) {
    order =
        OrderEntries(index.entries, {.prioritized = options.prioritized_files, .drop_names = {}});
  }
  if (order.prioritized.empty()) {
    // Nothing moves: every source byte in stream order, duplicates included.
    for (const TarEntry& e : index.entries) {
      if (auto st = w.WriteEntry(e); !st.ok()) return st;
    }
    auto r = w.Finish(index);
    if (r.ok()) r->missing_prioritized_files = std::move(order.missing);
    return r;
  }
  w.set_reordered();
  for (size_t i : order.prioritized) {
    if (auto st = w.WriteEntry(index.entries[i]); !st.ok()) return st;
  }
  auto prefetch_end = w.EndFrame();
  if (!prefetch_end.ok()) return prefetch_end.status();
  for (size_t i : order.rest) {
    if (auto st = w.WriteEntry(index.entries[i]); !st.ok()) return st;
  }
  auto r = w.Finish(index);
  if (!r.ok()) return r.status();
  r->prefetch_length = *prefetch_end;
  r->missing_prioritized_files = std::move(order.missing);
  return r;
}

}  // namespace lazypull::convert
