#include "fetcher/convert/estargz_writer.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "fetcher/convert/entry_order.h"
#include "fetcher/convert/frame_compressor.h"
#include "fetcher/convert/toc_util.h"
#include "fetcher/tar/tar_header_writer.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::convert {
namespace {

using tar::EntryType;
using tar::TarEntry;

constexpr char kLandmarkContent = 0x0f;
constexpr uint64_t kCopyPiece = 1 << 20;

class Writer {
 public:
  Writer(BlobReader& tar, const EstargzOptions& options, BlobSink& out)
      : tar_(tar), options_(options), out_(out), gzip_(options.gzip_level) {}

  absl::Status WriteEntry(const TarEntry& e) {
    auto header = tar_.ReadAt(e.header_offset, e.header_size());
    if (!header.ok()) return header.status();
    Emit(*header);
    if (auto st = CheckUtf8(e.name, "tar entry name"); !st.ok()) return st;
    if (e.type == EntryType::kGlobalHeader) {
      return CopyRaw(e.payload_offset, e.end_offset());
    }
    if (auto st = CheckUtf8(e.linkname, "link target of " + e.name); !st.ok()) return st;
    if (auto st = CheckUtf8(e.uname, "user name of " + e.name); !st.ok()) return st;
    if (auto st = CheckUtf8(e.gname, "group name of " + e.name); !st.ok()) return st;

    nlohmann::ordered_json j;
    j["name"] = e.name;
    j["type"] = TocType(e.type);
    if (e.type == EntryType::kRegular && e.payload_size > 0) j["size"] = e.payload_size;
    if (e.mtime.sec != 0 || e.mtime.nsec >= 500000000) {
      j["modtime"] = FormatRfc3339Seconds(e.mtime);
    }
    if ((e.type == EntryType::kHardlink || e.type == EntryType::kSymlink) && !e.linkname.empty()) {
      j["linkName"] = e.linkname;
    }
    if (e.mode != 0) j["mode"] = e.mode;
    if (e.uid != 0) j["uid"] = e.uid;
    if (e.gid != 0) j["gid"] = e.gid;
    if (!e.uname.empty()) j["userName"] = e.uname;
    if (!e.gname.empty()) j["groupName"] = e.gname;
    if (e.type == EntryType::kCharDevice || e.type == EntryType::kBlockDevice) {
      if (e.devmajor != 0) j["devMajor"] = e.devmajor;
      if (e.devminor != 0) j["devMinor"] = e.devminor;
    }
    if (!e.xattrs.empty()) {
      nlohmann::ordered_json x = nlohmann::ordered_json::object();
      for (const auto& [k, v] : e.xattrs) {
        if (auto st = CheckUtf8(k, "xattr name on " + e.name); !st.ok()) return st;
        x[k] = absl::Base64Escape(v);
      }
      j["xattrs"] = std::move(x);
    }

    if (e.type != EntryType::kRegular) {
      // Header-only types carry no payload in the stream (payload_size is 0).
      entries_.push_back(std::move(j));
      return CopyRaw(e.payload_offset, e.end_offset());
    }
    Sha256 file_sha;
    uint64_t written = 0;
    size_t first_index = entries_.size();
    while (written < e.payload_size) {
      uint64_t n = std::min(options_.chunk_size, e.payload_size - written);
      if (auto st = FlushMember(); !st.ok()) return st;
      nlohmann::ordered_json& ent = written == 0 ? j : (chunk_ = nlohmann::ordered_json());
      if (written != 0) {
        ent["name"] = e.name;
        ent["type"] = "chunk";
      }
      ent["offset"] = out_.size();
      if (written != 0) ent["chunkOffset"] = written;
      if (n == options_.chunk_size) ent["chunkSize"] = n;
      Sha256 chunk_sha;
      for (uint64_t done = 0; done < n;) {
        uint64_t piece = std::min(kCopyPiece, n - done);
        auto data = tar_.ReadAt(e.payload_offset + written + done, piece);
        if (!data.ok()) return data.status();
        chunk_sha.Update(*data);
        file_sha.Update(*data);
        Emit(*data);
        done += piece;
      }
      ent["chunkDigest"] = chunk_sha.Finish().ToString();
      entries_.push_back(std::move(ent));
      written += n;
    }
    if (e.payload_size == 0) entries_.push_back(std::move(j));
    entries_[first_index]["digest"] = file_sha.Finish().ToString();
    return CopyRaw(e.payload_offset + e.payload_size, e.end_offset());
  }

  absl::Status WriteLandmark(const char* name) {
    auto header = tar::RegularFileHeader(name, 1);
    if (!header.ok()) return header.status();
    Emit(*header);
    if (auto st = FlushMember(); !st.ok()) return st;
    nlohmann::ordered_json j;
    j["name"] = name;
    j["type"] = "reg";
    j["size"] = 1;
    j["offset"] = out_.size();
    std::string payload(1, kLandmarkContent);
    std::string digest = Digest::Of(payload).ToString();
    j["digest"] = digest;
    j["chunkDigest"] = digest;
    entries_.push_back(std::move(j));
    payload.resize(tar::kBlockSize, '\0');
    Emit(payload);
    return absl::OkStatus();
  }

  absl::StatusOr<EstargzResult> Finish() {
    if (auto st = FlushMember(); !st.ok()) return st;
    EstargzResult result;
    result.toc_offset = out_.size();
    nlohmann::ordered_json toc;
    toc["version"] = 1;
    toc["entries"] = std::move(entries_);
    std::string toc_json = toc.dump();
    result.toc_digest = Digest::Of(toc_json);
    auto header = tar::RegularFileHeader(kEstargzTocName, toc_json.size());
    if (!header.ok()) return header.status();
    Emit(*header);
    Emit(toc_json);
    Emit(std::string(tar::PadToBlock(toc_json.size()) - toc_json.size(), '\0'));
    Emit(tar::EndOfArchive());
    if (auto st = FlushMember(); !st.ok()) return st;
    if (auto st = out_.Append(EstargzFooter(result.toc_offset)); !st.ok()) return st;
    result.uncompressed_size = uncompressed_size_;
    result.diff_id = diff_sha_.Finish();
    result.blob_size = out_.size();
    auto digest = out_.Finish();
    if (!digest.ok()) return digest.status();
    result.blob_digest = *digest;
    return result;
  }

 private:
  void Emit(std::string_view data) {
    diff_sha_.Update(data);
    uncompressed_size_ += data.size();
    member_.append(data);
  }

  // Copies tar bytes [from, to) (padding after a payload), zero-filling past the stream end.
  absl::Status CopyRaw(uint64_t from, uint64_t to) {
    uint64_t avail_end = std::min(to, tar_.Size());
    for (uint64_t pos = from; pos < avail_end;) {
      uint64_t piece = std::min(kCopyPiece, avail_end - pos);
      auto data = tar_.ReadAt(pos, piece);
      if (!data.ok()) return data.status();
      Emit(*data);
      pos += piece;
    }
    if (to > avail_end && avail_end >= from) Emit(std::string(to - avail_end, '\0'));
    return absl::OkStatus();
  }

  absl::Status FlushMember() {
    if (member_.empty()) return absl::OkStatus();
    auto gz = gzip_.Compress(member_);
    if (!gz.ok()) return gz.status();
    member_.clear();
    return out_.Append(*gz);
  }

  BlobReader& tar_;
  const EstargzOptions& options_;
  BlobSink& out_;
  GzipMemberCompressor gzip_;
  std::string member_;
  Sha256 diff_sha_;
  uint64_t uncompressed_size_ = 0;
  nlohmann::ordered_json entries_ = nlohmann::ordered_json::array();
  nlohmann::ordered_json chunk_;
};

}  // namespace

std::string EstargzFooter(uint64_t toc_offset) {
  std::string f;
  f.append("\x1f\x8b\x08\x04", 4);  // magic, deflate, FEXTRA
  f.append(4, '\0');                // mtime
  f.append("\x00\xff", 2);          // xfl, os=unknown
  f.append("\x1a\x00", 2);          // XLEN = 26
  f.append("SG\x16\x00", 4);        // subfield 'S''G', length 22
  f.append(fmt::format("{:016x}STARGZ", toc_offset));
  f.append("\x01\x00\x00\xff\xff", 5);  // final empty stored block
  f.append(8, '\0');                    // CRC32 and ISIZE of nothing
  return f;
}

absl::StatusOr<EstargzResult> WriteEstargz(BlobReader& tar, const tar::TarIndex& index,
                                           const EstargzOptions& options, BlobSink& out) {
  if (options.chunk_size == 0) {
    return absl::InvalidArgumentError("eStargz chunk size must be positive");
  }
  EntryOrder order = OrderEntries(
      index.entries, {.prioritized = options.prioritized_files,
                      .drop_names = {kEstargzTocName, kPrefetchLandmark, kNoPrefetchLandmark}});
  if (!order.missing.empty() && !options.allow_missing_prioritized) {
    return absl::NotFoundError(
        fmt::format("prioritized file {} is not in the layer", order.missing.front()));
  }
  Writer w(tar, options, out);
  for (size_t i : order.prioritized) {
    if (auto st = w.WriteEntry(index.entries[i]); !st.ok()) return st;
  }
  // As the reference: the landmark says whether a list was given, not whether it matched.
  const bool any = !options.prioritized_files.empty();
  if (auto st = w.WriteLandmark(any ? kPrefetchLandmark : kNoPrefetchLandmark); !st.ok()) {
    return st;
  }
  for (size_t i : order.rest) {
    if (auto st = w.WriteEntry(index.entries[i]); !st.ok()) return st;
  }
  auto result = w.Finish();
  if (!result.ok()) return result.status();
  result->missing_prioritized_files = std::move(order.missing);
  return result;
}

}  // namespace lazypull::convert
