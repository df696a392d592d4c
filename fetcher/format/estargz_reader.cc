#include "fetcher/format/estargz_reader.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "fetcher/codec/gzip.h"
#include "fetcher/format/layer_index_builder.h"
#include "fetcher/format/status_util.h"
#include "fetcher/format/toc_common.h"
#include "fetcher/format/toc_json.h"
#include "fmt/format.h"

namespace lazypull::format {
namespace {

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("estargz: {}", what));
}

uint16_t Le16(std::string_view b, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(b[at]) | static_cast<uint8_t>(b[at + 1]) << 8);
}

// Parses "%016x" + "STARGZ".
std::optional<uint64_t> ParseTocOffsetField(std::string_view f) {
  if (f.size() != 22 || f.substr(16) != "STARGZ") return std::nullopt;
  uint64_t v = 0;
  for (char c : f.substr(0, 16)) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    v = v << 4 | static_cast<uint64_t>(d);
  }
  return v;
}

// A footer is a complete, empty gzip member with an FEXTRA field.
bool IsEmptyGzipMember(std::string_view member) {
  auto out = codec::Gunzip(member, {.max_output = 16, .allow_multiple_members = false});
  return out.ok() && out->empty();
}

std::optional<uint64_t> TryFooter(std::string_view f, uint64_t size) {
  if (f.size() != size) return std::nullopt;
  if (static_cast<uint8_t>(f[0]) != 0x1f || static_cast<uint8_t>(f[1]) != 0x8b || f[2] != 8 ||
      (f[3] & 0x04) == 0) {
    return std::nullopt;
  }
  std::optional<uint64_t> off;
  if (size == kEstargzFooterSize) {
    if (Le16(f, 10) != 26 || f[12] != 'S' || f[13] != 'G' || Le16(f, 14) != 22) return std::nullopt;
    off = ParseTocOffsetField(f.substr(16, 22));
  } else {
    if (Le16(f, 10) != 22) return std::nullopt;
    off = ParseTocOffsetField(f.substr(12, 22));
  }
  if (!off || !IsEmptyGzipMember(f)) return std::nullopt;
  return off;
}

uint64_t ParseTarNumber(std::string_view field, bool* ok) {
  *ok = true;
  if (!field.empty() && (static_cast<uint8_t>(field[0]) & 0x80)) {
    // GNU base-256.
    uint64_t v = static_cast<uint8_t>(field[0]) & 0x7f;
    for (size_t i = 1; i < field.size(); ++i) {
      if (v >> 55) {
        *ok = false;
        return 0;
      }
      v = v << 8 | static_cast<uint8_t>(field[i]);
    }
    return v;
  }
  uint64_t v = 0;
  bool digits = false;
  for (char c : field) {
    if (c == '\0' || c == ' ') {
      if (digits) break;
      continue;
    }
    if (c < '0' || c > '7' || (v >> 60)) {
      *ok = false;
      return 0;
    }
    v = v << 3 | static_cast<uint64_t>(c - '0');
    digits = true;
  }
  return v;
}

// State while streaming TOC entries into the builder.
class EstargzIndexer {
 public:
  EstargzIndexer(uint64_t toc_offset, const IndexBuildOptions& options)
      : toc_offset_(toc_offset), options_(options), builder_(LayerFormat::kEstargz, options) {}

  // The smallest entries a TOC writer emits take ~100 bytes of JSON; typical ones 300.
  void ReserveForToc(size_t json_bytes) { builder_.ReserveEntries(json_bytes / 64); }

  absl::Status OnEntry(TocEntry& e) {
    if (e.type == "chunk") return OnChunk(e);
    if (auto st = Flush(); !st.ok()) return st;
    if (e.offset > 0 && e.inner_offset == 0) member_starts_.push_back(e.offset);
    if (std::string_view landmark = Landmark(e.name); !landmark.empty()) {
      if (landmark == kPrefetchLandmark) {
        if (static_cast<uint64_t>(e.offset) > toc_offset_) {
          return Bad(fmt::format("prefetch landmark offset {} is past the TOC offset {}", e.offset,
                                 toc_offset_));
        }
        builder_.SetPrefetchRange(ByteRange{0, static_cast<uint64_t>(e.offset)});
      } else {
        builder_.SetNoPrefetchLandmark();
      }
      return absl::OkStatus();
    }
    auto meta = MetaFromEntry(e);
    if (!meta.ok()) return meta.status();
    if (e.type != "reg") return AddNonRegular(builder_, e, *meta);

    pending_ = true;
    path_.assign(e.name);
    meta_ = std::move(*meta);
    size_ = static_cast<uint64_t>(e.size);
    file_digest_.assign(e.digest);
    chunks_.clear();
    if (size_ > 0) return AddChunk(e);
    return absl::OkStatus();
  }

  absl::StatusOr<LayerIndex> Finish(const Digest& toc_digest, uint64_t blob_size) {
    if (auto st = Flush(); !st.ok()) return st;
    member_starts_.push_back(toc_offset_);
    if (auto st = builder_.ResolveMemberEnds(std::move(member_starts_)); !st.ok()) return st;
    return builder_.Finish(toc_digest, blob_size, toc_offset_);
  }

 private:
  absl::Status OnChunk(TocEntry& e) {
    if (!pending_) return Bad("\"chunk\" entry without a preceding regular file");
    if (e.offset > 0 && e.inner_offset == 0) member_starts_.push_back(e.offset);
    return AddChunk(e);
  }

  absl::Status AddChunk(const TocEntry& e) {
    uint64_t chunk_offset = static_cast<uint64_t>(e.chunk_offset);
    if (chunk_offset >= size_) {
      return Bad(fmt::format("\"{}\": chunk offset {} is not below the file size {}",
                             path_.substr(0, 256), chunk_offset, size_));
    }
    if (e.offset <= 0) {
      return Bad(fmt::format("\"{}\": file data without a blob offset", path_.substr(0, 256)));
    }
    Chunk c;
    c.compression = ChunkCompression::kGzipMember;
    c.compressed_offset = static_cast<uint64_t>(e.offset);
    c.inner_offset = static_cast<uint64_t>(e.inner_offset);
    c.file_offset = chunk_offset;
    c.length = e.chunk_size > 0 ? static_cast<uint64_t>(e.chunk_size) : size_ - chunk_offset;
    if (!e.chunk_digest.empty()) {
      auto st = ParseSha256(e.chunk_digest, fmt::format("\"{}\" chunkDigest", path_.substr(0, 256)),
                            &c.digest);
      if (!st.ok()) return st;
      c.has_digest = true;
    }
    chunks_.push_back(c);
    return absl::OkStatus();
  }

  absl::Status Flush() {
    if (!pending_) return absl::OkStatus();
    pending_ = false;
    // Reference behaviour: without chunk digests, a single-chunk file may be verified by its
    // whole-file digest.
    if (chunks_.size() == 1 && !chunks_[0].has_digest && !file_digest_.empty()) {
      auto st = ParseSha256(file_digest_, fmt::format("\"{}\" digest", path_.substr(0, 256)),
                            &chunks_[0].digest);
      if (!st.ok()) return st;
      chunks_[0].has_digest = true;
    }
    return builder_.AddRegular(path_, meta_, size_, std::move(chunks_));
  }

  uint64_t toc_offset_;
  const IndexBuildOptions& options_;
  LayerIndexBuilder builder_;
  std::vector<uint64_t> member_starts_;
  bool pending_ = false;
  std::string path_;
  EntryMeta meta_;
  uint64_t size_ = 0;
  std::string file_digest_;
  std::vector<Chunk> chunks_;
};

}  // namespace

absl::StatusOr<EstargzFooter> ParseEstargzFooter(std::string_view tail, uint64_t blob_size) {
  for (uint64_t size : {kEstargzFooterSize, kLegacyStargzFooterSize}) {
    if (tail.size() < size || blob_size < size) continue;
    auto off = TryFooter(tail.substr(tail.size() - size), size);
    if (!off) continue;
    if (*off >= blob_size - size) {
      return Bad(fmt::format("footer TOC offset {} is outside the blob (size {}, footer {})", *off,
                             blob_size, size));
    }
    return EstargzFooter{*off, size};
  }
  if (blob_size < kLegacyStargzFooterSize) {
    return Bad(fmt::format("blob of {} bytes is too small for a footer", blob_size));
  }
  return Bad("no eStargz or stargz footer at the end of the blob");
}

absl::StatusOr<std::string_view> ExtractEstargzTocJson(std::string_view tar) {
  size_t pos = 0;
  for (int headers = 0; headers < 8; ++headers) {
    if (tar.size() - pos < 512) return Bad("TOC member ends inside a tar header");
    std::string_view h = tar.substr(pos, 512);
    if (h.find_first_not_of('\0') == std::string_view::npos) {
      return Bad("TOC member has no stargz.index.json entry");
    }
    bool ok;
    uint64_t size = ParseTarNumber(h.substr(124, 12), &ok);
    if (!ok) return Bad("TOC tar header has a bad size field");
    char type = h[156];
    pos += 512;
    if (size > tar.size() - pos) {
      return Bad(fmt::format("TOC tar entry of {} bytes exceeds the TOC member", size));
    }
    std::string_view name = h.substr(0, 100);
    name = name.substr(0, name.find('\0'));
    if ((type == '0' || type == '\0') && name == kEstargzTocName) return tar.substr(pos, size);
    if (type != 'x' && type != 'g' && type != 'L' && type != 'K') {
      return Bad(fmt::format("TOC member holds \"{}\" instead of {}", name, kEstargzTocName));
    }
    // PAX / GNU long-name headers precede the real one; the TOC's name is short, so their
    // content does not matter.
    uint64_t padded = (size + 511) / 512 * 512;
    if (padded > tar.size() - pos) return Bad("TOC tar extension header is truncated");
    pos += padded;
  }
  return Bad("too many tar extension headers before the TOC");
}

namespace {

// `toc_digest` is asked for only once the entries are in (see ReadEstargzIndex).
absl::StatusOr<LayerIndex> BuildIndex(std::string_view toc_json, uint64_t toc_offset,
                                      uint64_t blob_size, const std::function<Digest()>& toc_digest,
                                      const IndexBuildOptions& options) {
  EstargzIndexer indexer(toc_offset, options);
  indexer.ReserveForToc(toc_json.size());
  TocHeader header;
  absl::Status st =
      ParseTocJson(toc_json, &header, [&indexer](TocEntry& e) { return indexer.OnEntry(e); });
  if (!st.ok()) return absl::Status(st.code(), fmt::format("estargz: {}", Msg(st)));
  auto index = indexer.Finish(toc_digest(), blob_size);
  if (!index.ok()) {
    return absl::Status(index.status().code(), fmt::format("estargz: {}", Msg(index.status())));
  }
  return index;
}

// Joins a thread when it goes out of scope.
struct JoinOnExit {
  std::thread& thread;
  ~JoinOnExit() {
    if (thread.joinable()) thread.join();
  }
};

}  // namespace

absl::StatusOr<LayerIndex> BuildEstargzIndex(std::string_view toc_json, uint64_t toc_offset,
                                             uint64_t blob_size, const Digest& toc_digest,
                                             const IndexBuildOptions& options) {
  return BuildIndex(
      toc_json, toc_offset, blob_size, [&toc_digest] { return toc_digest; }, options);
}

absl::StatusOr<LayerIndex> ReadEstargzIndex(BlobReader& blob,
                                            const std::optional<Digest>& expected_toc_digest,
                                            const FormatReadOptions& options) {
  if (!expected_toc_digest && !options.build.allow_missing_digests) {
    return Bad(
        fmt::format("layer has no {} annotation (set allow_missing_digests to accept an "
                    "unverified TOC)",
                    kEstargzTocDigestAnnotation));
  }
  const uint64_t size = blob.Size();
  if (size < kLegacyStargzFooterSize) {
    return Bad(fmt::format("blob of {} bytes is too small for a footer", size));
  }
  uint64_t tail_len = std::min<uint64_t>(size, kEstargzFooterSize);
  auto tail = blob.ReadAt(size - tail_len, tail_len);
  if (!tail.ok()) return tail.status();
  auto footer = ParseEstargzFooter(*tail, size);
  if (!footer.ok()) return footer.status();

  uint64_t toc_len = size - footer->footer_size - footer->toc_offset;
  if (toc_len > options.max_toc_size) {
    return Bad(fmt::format("compressed TOC of {} bytes exceeds the limit {}", toc_len,
                           options.max_toc_size));
  }
  auto compressed = blob.ReadAt(footer->toc_offset, toc_len);
  if (!compressed.ok()) return compressed.status();
  auto tar = codec::Gunzip(*compressed, {.max_output = options.max_toc_size + 4096});
  if (!tar.ok()) {
    if (tar.status().code() == absl::StatusCode::kResourceExhausted) {
      return Bad(
          fmt::format("TOC decompresses to more than {} bytes (TOC bomb?)", options.max_toc_size));
    }
    return absl::DataLossError(
        fmt::format("estargz: TOC at offset {}: {}", footer->toc_offset, Msg(tar.status())));
  }
  auto json = ExtractEstargzTocJson(*tar);
  if (!json.ok()) return json.status();
  if (json->size() > options.max_toc_size) {
    return Bad(fmt::format("TOC JSON of {} bytes exceeds the limit {} (TOC bomb?)", json->size(),
                           options.max_toc_size));
  }
  // A large TOC is hashed on a second thread while the index is built from it (~7 ms of a
  // 10 MB TOC's ~90). Both only read the JSON; the parser and builder take hostile input as it
  // comes, and the index is dropped unless the digest matches.
  Digest actual;
  std::thread hasher;
  JoinOnExit join_hasher{hasher};
  if (json->size() >= (1 << 20)) {
    try {
      hasher = std::thread([&actual, json = *json] { actual = Digest::Of(json); });
    } catch (const std::system_error&) {
      // No thread to be had: hash inline below.
    }
  }
  if (!hasher.joinable()) actual = Digest::Of(*json);
  auto digest = [&hasher, &actual] {
    if (hasher.joinable()) hasher.join();
    return actual;
  };
  auto index = BuildIndex(*json, footer->toc_offset, size, digest, options.build);
  digest();
  if (expected_toc_digest && actual != *expected_toc_digest) {
    return absl::DataLossError(fmt::format(
        "estargz: TOC digest mismatch: annotation {} says {}, "
        "TOC is {}",
        kEstargzTocDigestAnnotation, expected_toc_digest->ToString(), actual.ToString()));
  }
  return index;
}

}  // namespace lazypull::format
