#include "fetcher/format/zstd_chunked_reader.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/layer_index_builder.h"
#include "fetcher/format/status_util.h"
#include "fetcher/format/toc_common.h"
#include "fetcher/format/toc_json.h"
#include "fmt/format.h"

namespace lazypull::format {
namespace {

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("zstd:chunked: {}", what));
}

uint64_t Le64(std::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(b[at + i]);
  return v;
}
uint32_t Le32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(b[at + i]);
  return v;
}

absl::Status ParsePosition(std::string_view key, std::string_view text, size_t fields,
                           uint64_t* out) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (parts.size() != fields) {
    return Bad(fmt::format("annotation {}=\"{}\": want {} colon-separated numbers", key,
                           text.substr(0, 100), fields));
  }
  for (size_t i = 0; i < fields; ++i) {
    if (!absl::SimpleAtoi(absl::string_view(parts[i].data(), parts[i].size()), &out[i])) {
      return Bad(fmt::format("annotation {}=\"{}\": \"{}\" is not a number", key,
                             text.substr(0, 100), parts[i].substr(0, 32)));
    }
  }
  return absl::OkStatus();
}

class ZstdChunkedIndexer {
 public:
  explicit ZstdChunkedIndexer(const IndexBuildOptions& options)
      : builder_(LayerFormat::kZstdChunked, options) {}

  // The smallest entries a TOC writer emits take ~100 bytes of JSON; typical ones 300.
  void ReserveForToc(size_t json_bytes) { builder_.ReserveEntries(json_bytes / 64); }

  absl::Status OnEntry(TocEntry& e) {
    if (e.offset > 0 && e.inner_offset == 0) member_starts_.push_back(e.offset);
    if (e.type == "chunk") return OnChunk(e);
    if (auto st = Flush(); !st.ok()) return st;
    // stargz-snapshotter's zstd:chunked carries an eStargz TOC, landmarks included.
    std::string_view landmark = Landmark(e.name);
    if (landmark == kPrefetchLandmark) {
      prefetch_end_ = static_cast<uint64_t>(e.offset);
      return absl::OkStatus();
    }
    if (landmark == kNoPrefetchLandmark) {
      builder_.SetNoPrefetchLandmark();
      return absl::OkStatus();
    }
    auto meta = MetaFromEntry(e);
    if (!meta.ok()) return meta.status();
    if (e.type != "reg") return AddNonRegular(builder_, e, *meta);
    pending_ = true;
    path_.assign(e.name);
    meta_ = std::move(*meta);
    size_ = static_cast<uint64_t>(e.size);
    end_offset_ = static_cast<uint64_t>(e.end_offset);
    chunks_.clear();
    if (size_ == 0) return absl::OkStatus();
    if (e.chunk_size == 0 && e.chunk_digest.empty()) {
      // Unchunked file: one frame [offset, endOffset), verified by the file digest.
      e.chunk_digest = e.digest;
    }
    return AddChunk(e);
  }

  absl::StatusOr<LayerIndex> Finish(const Digest& checksum, uint64_t blob_size, uint64_t data_end,
                                    const std::optional<ByteRange>& annotated_prefetch) {
    if (auto st = Flush(); !st.ok()) return st;
    if (annotated_prefetch) {
      if (annotated_prefetch->offset > data_end ||
          annotated_prefetch->length > data_end - annotated_prefetch->offset) {
        return Bad(fmt::format("annotation {}: range [{}, +{}) is outside the data area [0, {})",
                               kLazypullPrefetchRangeKey, annotated_prefetch->offset,
                               annotated_prefetch->length, data_end));
      }
      builder_.SetPrefetchRange(*annotated_prefetch);
    } else if (prefetch_end_ != 0) {
      if (prefetch_end_ > data_end) return Bad("prefetch landmark past the data area");
      builder_.SetPrefetchRange(ByteRange{0, prefetch_end_});
    }
    if (needs_member_ends_) {
      member_starts_.push_back(data_end);
      if (auto st = builder_.ResolveMemberEnds(std::move(member_starts_)); !st.ok()) return st;
    }
    return builder_.Finish(checksum, blob_size, data_end);
  }

 private:
  std::string_view Path() const { return std::string_view(path_).substr(0, 256); }

  absl::Status OnChunk(TocEntry& e) {
    if (!pending_) return Bad("\"chunk\" entry without a preceding regular file");
    if (!e.name.empty() && e.name != path_) {
      return Bad(fmt::format("chunk entry for \"{}\" follows file \"{}\"",
                             std::string_view(e.name).substr(0, 256), Path()));
    }
    return AddChunk(e);
  }

  absl::Status AddChunk(const TocEntry& e) {
    uint64_t chunk_offset = static_cast<uint64_t>(e.chunk_offset);
    if (chunk_offset >= size_) {
      return Bad(fmt::format("\"{}\": chunk offset {} is not below the file size {}", Path(),
                             chunk_offset, size_));
    }
    if (e.offset <= 0) return Bad(fmt::format("\"{}\": file data without a blob offset", Path()));
    Chunk c;
    if (e.chunk_type.empty()) {
      c.compression = ChunkCompression::kZstdFrame;
    } else if (e.chunk_type == "zeros") {
      c.compression = ChunkCompression::kZeros;
    } else {
      return Bad(fmt::format("\"{}\": unknown chunkType \"{}\"", Path(),
                             std::string_view(e.chunk_type).substr(0, 32)));
    }
    c.compressed_offset = static_cast<uint64_t>(e.offset);
    c.inner_offset = static_cast<uint64_t>(e.inner_offset);
    c.file_offset = chunk_offset;
    c.length = e.chunk_size > 0 ? static_cast<uint64_t>(e.chunk_size) : size_ - chunk_offset;
    if (!e.chunk_digest.empty()) {
      auto st = ParseSha256(e.chunk_digest, fmt::format("\"{}\" chunk digest", Path()), &c.digest);
      if (!st.ok()) return st;
      c.has_digest = true;
    }
    chunks_.push_back(c);
    return absl::OkStatus();
  }

  absl::Status Flush() {
    if (!pending_) return absl::OkStatus();
    pending_ = false;
    // Frame i ends where frame i+1 starts; the last one at the file's endOffset. Without
    // endOffset (stargz-snapshotter's writer) frames end at the next frame start in the blob,
    // resolved once the whole TOC is known.
    if (end_offset_ == 0 && !chunks_.empty()) {
      needs_member_ends_ = true;
      for (Chunk& c : chunks_) c.compressed_length = 0;
      return builder_.AddRegular(path_, meta_, size_, std::move(chunks_));
    }
    for (size_t i = 0; i < chunks_.size(); ++i) {
      uint64_t end = i + 1 < chunks_.size() ? chunks_[i + 1].compressed_offset : end_offset_;
      if (end <= chunks_[i].compressed_offset) {
        return Bad(
            fmt::format("\"{}\": chunk frame at {} ends at {} (endOffset missing or "
                        "offsets not increasing)",
                        Path(), chunks_[i].compressed_offset, end));
      }
      chunks_[i].compressed_length = end - chunks_[i].compressed_offset;
    }
    return builder_.AddRegular(path_, meta_, size_, std::move(chunks_));
  }

  LayerIndexBuilder builder_;
  bool pending_ = false;
  std::string path_;
  EntryMeta meta_;
  uint64_t size_ = 0;
  uint64_t end_offset_ = 0;
  std::vector<Chunk> chunks_;
  std::vector<uint64_t> member_starts_;
  bool needs_member_ends_ = false;
  uint64_t prefetch_end_ = 0;
};

}  // namespace

absl::StatusOr<std::optional<ByteRange>> PrefetchRangeFromAnnotations(
    const std::map<std::string, std::string>& annotations) {
  auto it = annotations.find(std::string(kLazypullPrefetchRangeKey));
  if (it == annotations.end()) return std::nullopt;
  uint64_t f[2];
  if (auto st = ParsePosition(kLazypullPrefetchRangeKey, it->second, 2, f); !st.ok()) return st;
  if (f[1] == 0 || f[0] > std::numeric_limits<uint64_t>::max() - f[1]) {
    return Bad(fmt::format("annotation {}=\"{}\": want OFFSET:LENGTH with LENGTH > 0",
                           kLazypullPrefetchRangeKey, std::string_view(it->second).substr(0, 100)));
  }
  return ByteRange{f[0], f[1]};
}

absl::StatusOr<ZstdChunkedLocation> ZstdChunkedLocationFromAnnotations(
    const std::map<std::string, std::string>& annotations) {
  ZstdChunkedLocation loc;
  auto find = [&annotations](std::string_view key) -> const std::string* {
    auto it = annotations.find(std::string(key));
    return it == annotations.end() ? nullptr : &it->second;
  };
  const std::string* pos = find(kZstdChunkedManifestPositionKey);
  const std::string* sum = find(kZstdChunkedManifestChecksumKey);
  std::string_view pos_key = kZstdChunkedManifestPositionKey;
  if (pos == nullptr) {
    pos = find(kLegacyZstdChunkedManifestPositionKey);
    sum = find(kLegacyZstdChunkedManifestChecksumKey);
    pos_key = kLegacyZstdChunkedManifestPositionKey;
    loc.legacy = true;
  }
  if (pos == nullptr) return absl::NotFoundError("zstd:chunked: no manifest-position annotation");
  uint64_t f[4];
  if (auto st = ParsePosition(pos_key, *pos, 4, f); !st.ok()) return st;
  loc.manifest_offset = f[0];
  loc.manifest_length = f[1];
  loc.manifest_uncompressed_length = f[2];
  loc.manifest_type = f[3];
  if (!loc.legacy) {
    if (const std::string* ts = find(kZstdChunkedTarSplitPositionKey); ts != nullptr) {
      uint64_t t[3];
      if (auto st = ParsePosition(kZstdChunkedTarSplitPositionKey, *ts, 3, t); !st.ok()) return st;
      loc.tar_split_offset = t[0];
      loc.tar_split_length = t[1];
      loc.tar_split_uncompressed_length = t[2];
    }
  }
  if (sum != nullptr) {
    auto d = Digest::Parse(*sum);
    if (!d.ok()) return Bad(fmt::format("manifest-checksum annotation: {}", Msg(d.status())));
    loc.manifest_checksum = *d;
  }
  return loc;
}

absl::StatusOr<ZstdChunkedLocation> ParseZstdChunkedFooter(std::string_view tail,
                                                           uint64_t blob_size) {
  ZstdChunkedLocation loc;
  for (uint64_t payload : {kZstdChunkedFooterSize, kLegacyZstdChunkedFooterSize}) {
    uint64_t frame = payload + codec::kZstdSkippableHeaderSize;
    if (tail.size() < frame || blob_size < frame) continue;
    std::string_view f = tail.substr(tail.size() - frame);
    std::string_view magic = f.substr(frame - 8);
    bool current = payload == kZstdChunkedFooterSize && magic == kZstdChunkedFooterMagic;
    bool legacy = payload == kLegacyZstdChunkedFooterSize && magic == kLegacyZstdChunkedFooterMagic;
    if (!current && !legacy) continue;
    if (Le32(f, 0) != codec::kZstdSkippableMagic || Le32(f, 4) != payload) {
      return Bad("footer magic found but not inside a skippable frame of the right size");
    }
    std::string_view p = f.substr(8);
    loc.legacy = legacy;
    loc.manifest_offset = Le64(p, 0);
    loc.manifest_length = Le64(p, 8);
    loc.manifest_uncompressed_length = Le64(p, 16);
    loc.manifest_type = Le64(p, 24);
    if (current) {
      loc.tar_split_offset = Le64(p, 32);
      loc.tar_split_length = Le64(p, 40);
      loc.tar_split_uncompressed_length = Le64(p, 48);
    }
    if (loc.manifest_offset > blob_size - frame ||
        loc.manifest_length > blob_size - frame - loc.manifest_offset) {
      return Bad(fmt::format("footer manifest range [{}, +{}) is outside the blob of {} bytes",
                             loc.manifest_offset, loc.manifest_length, blob_size));
    }
    return loc;
  }
  return absl::NotFoundError("zstd:chunked: no footer at the end of the blob");
}

absl::StatusOr<LayerIndex> BuildZstdChunkedIndex(std::string_view manifest_json,
                                                 const ZstdChunkedLocation& location,
                                                 uint64_t blob_size, const Digest& checksum,
                                                 const IndexBuildOptions& options) {
  ZstdChunkedIndexer indexer(options);
  indexer.ReserveForToc(manifest_json.size());
  TocHeader header;
  absl::Status st =
      ParseTocJson(manifest_json, &header, [&indexer](TocEntry& e) { return indexer.OnEntry(e); });
  if (!st.ok()) return absl::Status(st.code(), fmt::format("zstd:chunked: {}", Msg(st)));
  uint64_t data_end = location.manifest_offset >= codec::kZstdSkippableHeaderSize
                          ? location.manifest_offset - codec::kZstdSkippableHeaderSize
                          : 0;
  auto index =
      indexer.Finish(checksum, blob_size, std::min(data_end, blob_size), location.prefetch_range);
  if (!index.ok()) {
    return absl::Status(index.status().code(),
                        fmt::format("zstd:chunked: {}", Msg(index.status())));
  }
  return index;
}

absl::StatusOr<LayerIndex> ReadZstdChunkedIndex(
    BlobReader& blob, const std::map<std::string, std::string>& annotations,
    const FormatReadOptions& options) {
  const uint64_t size = blob.Size();
  auto loc = ZstdChunkedLocationFromAnnotations(annotations);
  if (!loc.ok() && loc.status().code() != absl::StatusCode::kNotFound) return loc.status();
  if (!loc.ok()) {
    uint64_t tail_len =
        std::min<uint64_t>(size, kZstdChunkedFooterSize + codec::kZstdSkippableHeaderSize);
    auto tail = blob.ReadAt(size - tail_len, tail_len);
    if (!tail.ok()) return tail.status();
    loc = ParseZstdChunkedFooter(*tail, size);
    if (!loc.ok()) return loc.status();
    // The footer carries no checksum; it can still come from the annotations.
    for (std::string_view key :
         {kZstdChunkedManifestChecksumKey, kLegacyZstdChunkedManifestChecksumKey}) {
      auto it = annotations.find(std::string(key));
      if (it == annotations.end()) continue;
      auto d = Digest::Parse(it->second);
      if (!d.ok()) return Bad(fmt::format("{} annotation: {}", key, Msg(d.status())));
      loc->manifest_checksum = *d;
      break;
    }
  }
  auto prefetch = PrefetchRangeFromAnnotations(annotations);
  if (!prefetch.ok()) return prefetch.status();
  loc->prefetch_range = *prefetch;
  if (!loc->manifest_checksum && !options.build.allow_missing_digests) {
    return Bad(
        "no manifest-checksum annotation (set allow_missing_digests to accept an "
        "unverified manifest)");
  }
  if (loc->manifest_type != 1) {
    return Bad(fmt::format("unsupported manifest type {} (want 1)", loc->manifest_type));
  }
  if (loc->manifest_length > options.max_toc_size ||
      loc->manifest_uncompressed_length > options.max_toc_size) {
    return Bad(
        fmt::format("manifest of {} bytes ({} uncompressed) exceeds the limit {} "
                    "(TOC bomb?)",
                    loc->manifest_length, loc->manifest_uncompressed_length, options.max_toc_size));
  }
  const uint64_t hdr = codec::kZstdSkippableHeaderSize;
  if (loc->manifest_offset < hdr || loc->manifest_offset > size ||
      loc->manifest_length > size - loc->manifest_offset) {
    return Bad(fmt::format("manifest range [{}, +{}) is outside the blob of {} bytes",
                           loc->manifest_offset, loc->manifest_length, size));
  }
  auto frame = blob.ReadAt(loc->manifest_offset - hdr, loc->manifest_length + hdr);
  if (!frame.ok()) return frame.status();
  if (Le32(*frame, 0) != codec::kZstdSkippableMagic || Le32(*frame, 4) != loc->manifest_length) {
    return Bad(fmt::format("no skippable frame of {} bytes at offset {}", loc->manifest_length,
                           loc->manifest_offset - hdr));
  }
  std::string_view compressed = std::string_view(*frame).substr(hdr);
  Digest actual = Digest::Of(compressed);
  if (loc->manifest_checksum && actual != *loc->manifest_checksum) {
    return absl::DataLossError(
        fmt::format("zstd:chunked: manifest checksum mismatch: annotation says {}, compressed "
                    "manifest is {}",
                    loc->manifest_checksum->ToString(), actual.ToString()));
  }
  auto json = codec::ZstdDecompress(compressed, {.max_output = loc->manifest_uncompressed_length});
  if (!json.ok()) {
    return absl::DataLossError(fmt::format("zstd:chunked: manifest at offset {}: {}",
                                           loc->manifest_offset, Msg(json.status())));
  }
  if (json->size() != loc->manifest_uncompressed_length) {
    return absl::DataLossError(
        fmt::format("zstd:chunked: manifest decompressed to {} bytes, "
                    "position says {}",
                    json->size(), loc->manifest_uncompressed_length));
  }
  return BuildZstdChunkedIndex(*json, *loc, size, actual, options.build);
}

}  // namespace lazypull::format
