#include "fetcher/format/soci/ztoc_builder.h"

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "fetcher/format/soci/checkpointing_inflater.h"
#include "fetcher/format/status_util.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

// The tar scanner's view of the layer while it is being inflated: bytes before the offset the
// scanner asks for are discarded, so only headers and extension payloads are ever held.
class InflatingTarSource : public tar::TarSource {
 public:
  InflatingTarSource(CheckpointingInflater& inflater, uint64_t large_file_spans)
      : inflater_(inflater), large_file_spans_(large_file_spans) {}

  void OnPayload(uint64_t offset, uint64_t size) override {
    if (large_file_spans_ == 0 || size < large_file_spans_) return;
    inflater_.RequestCheckpoint(offset);
    inflater_.RequestCheckpoint(offset + size);
  }

  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    if (auto st = SkipTo(offset); !st.ok()) return st;
    if (base_ < offset) return std::string();  // the stream ended before `offset`
    while (buf_.size() < length) {
      auto n = inflater_.Read(buf_, length - buf_.size());
      if (!n.ok()) return n.status();
      if (*n == 0) break;
    }
    return buf_.substr(0, std::min<uint64_t>(length, buf_.size()));
  }

  absl::StatusOr<uint64_t> Available(uint64_t end) override {
    if (auto st = SkipTo(end); !st.ok()) return st;
    return std::min(base_, end);
  }

 private:
  // Drops everything before `offset` (producing it first if needed); afterwards base_ ==
  // offset unless the stream ended earlier.
  absl::Status SkipTo(uint64_t offset) {
    if (offset <= base_ + buf_.size()) {
      if (offset > base_) {
        buf_.erase(0, offset - base_);
        base_ = offset;
      }
      return absl::OkStatus();
    }
    base_ += buf_.size();
    buf_.clear();
    std::string scratch;
    while (base_ < offset) {
      scratch.clear();
      auto n = inflater_.Read(scratch, std::min<uint64_t>(offset - base_, 1 << 20));
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      base_ += *n;
    }
    return absl::OkStatus();
  }

  CheckpointingInflater& inflater_;
  const uint64_t large_file_spans_;
  uint64_t base_ = 0;  // stream offset of buf_[0]
  std::string buf_;
};

std::optional<std::string_view> TypeName(tar::EntryType t) {
  switch (t) {
    case tar::EntryType::kRegular:
      return "reg";
    case tar::EntryType::kHardlink:
      return "hardlink";
    case tar::EntryType::kSymlink:
      return "symlink";
    case tar::EntryType::kCharDevice:
      return "char";
    case tar::EntryType::kBlockDevice:
      return "block";
    case tar::EntryType::kDirectory:
      return "dir";
    case tar::EntryType::kFifo:
      return "fifo";
    case tar::EntryType::kGlobalHeader:
      return std::nullopt;
  }
  return std::nullopt;
}

ZtocFile ToZtocFile(const tar::TarEntry& e, std::string_view type) {
  ZtocFile f;
  f.name = e.name;
  f.type = std::string(type);
  f.uncompressed_offset = e.payload_offset;
  f.uncompressed_size = e.payload_size;
  f.linkname = e.linkname;
  f.mode = e.mode;
  // soci stores Go's int uid/gid as uint32, truncating the same way.
  f.uid = static_cast<uint32_t>(e.uid);
  f.gid = static_cast<uint32_t>(e.gid);
  f.uname = e.uname;
  f.gname = e.gname;
  f.mtime_sec = e.mtime.sec;
  f.mtime_nsec = static_cast<uint32_t>(e.mtime.nsec);
  f.devmajor = e.devmajor;
  f.devminor = e.devminor;
  for (const auto& [name, value] : e.xattrs) {  // std::map: already in key order
    f.pax_records.emplace_back("SCHILY.xattr." + name, value);
  }
  return f;
}

}  // namespace

absl::StatusOr<Ztoc> BuildZtoc(BlobReader& layer, const ZtocBuildOptions& options) {
  CheckpointingInflater inflater(layer, options.span_size, options.read_size);
  if (options.window_sink) inflater.set_window_sink(options.window_sink);
  InflatingTarSource source(inflater, options.large_file_spans);
  auto tar_index = tar::ScanTarStream(source, options.scan);
  if (!tar_index.ok()) return tar_index.status();
  auto inflated = inflater.Finish();
  if (!inflated.ok()) return inflated.status();

  Ztoc z;
  z.build_tool_identifier = options.build_tool_identifier;
  z.compressed_archive_size = inflated->compressed_size;
  // Where soci's reader (Go archive/tar) stops: past the two zero blocks of the end marker,
  // or the stream end when it is shorter.
  z.uncompressed_archive_size =
      std::min(inflated->uncompressed_size, tar_index->trailer_offset + 2 * tar::kBlockSize);
  for (const tar::TarEntry& e : tar_index->entries) {
    auto type = TypeName(e.type);
    if (!type) continue;
    z.files.push_back(ToZtocFile(e, *type));
  }
  const bool windowless = static_cast<bool>(options.window_sink);
  auto blob = windowless
                  ? ZinfoCheckpoints::SerializeWindowless(options.span_size, inflated->checkpoints)
                  : ZinfoCheckpoints::SerializeV2(options.span_size, inflated->checkpoints);
  if (!blob.ok()) return blob.status();
  auto checkpoints = windowless ? ZinfoCheckpoints::ParseWindowless(*std::move(blob), SIZE_MAX)
                                : ZinfoCheckpoints::Parse(*std::move(blob), SIZE_MAX);
  if (!checkpoints.ok()) {
    return absl::InternalError(fmt::format("ztoc builder: own checkpoints invalid: {}",
                                           format::Msg(checkpoints.status())));
  }
  z.checkpoints = *std::move(checkpoints);
  z.span_digests = std::move(inflated->span_digests);
  if (z.span_digests.size() != z.checkpoints.size()) {
    return absl::InternalError(fmt::format("ztoc builder: {} span digests for {} checkpoints",
                                           z.span_digests.size(), z.checkpoints.size()));
  }
  return z;
}

}  // namespace lazypull::soci
