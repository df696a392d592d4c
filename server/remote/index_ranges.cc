#include "server/remote/index_ranges.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/atomic_file.h"
#include "base/logging.h"
#include "fetcher/format/format_detector.h"

namespace lazypull::remote {
namespace {

// File format: magic, then per range: offset (8 bytes LE), length (8 bytes LE), bytes.
constexpr std::string_view kMagic = "lazypull-index-ranges-v1\n";
// An index is at most a few tens of MiB (the format parsers cap the TOC); larger is damage.
constexpr uint64_t kMaxFileBytes = 256ull << 20;

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

// Parses the file into `out`; false (and `out` empty) when it is malformed.
bool Parse(std::string_view data, uint64_t blob_size, std::map<uint64_t, std::string>& out) {
  if (data.substr(0, kMagic.size()) != kMagic) return false;
  data.remove_prefix(kMagic.size());
  while (!data.empty()) {
    if (data.size() < 16) return false;
    const uint64_t offset = GetU64(data.substr(0, 8));
    const uint64_t length = GetU64(data.substr(8, 8));
    data.remove_prefix(16);
    if (length == 0 || length > data.size() || offset > blob_size || length > blob_size - offset)
      return false;
    out[offset] = std::string(data.substr(0, length));
    data.remove_prefix(length);
  }
  return true;
}

}  // namespace

IndexRangeReader::IndexRangeReader(std::shared_ptr<BlobReader> inner, std::string path)
    : inner_(std::move(inner)), path_(std::move(path)) {
  absl::StatusOr<std::unique_ptr<BlobReader>> file = NewFileBlobReader(path_);
  if (!file.ok() || (*file)->Size() > kMaxFileBytes) return;
  absl::StatusOr<std::string> data = (*file)->ReadAt(0, (*file)->Size());
  if (!data.ok()) return;
  if (!Parse(*data, inner_->Size(), ranges_)) {
    LogWarn("ignoring a malformed saved layer index", {{"path", path_}});
    ranges_.clear();
  }
}

absl::StatusOr<std::string> IndexRangeReader::ReadAt(uint64_t offset, uint64_t length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ranges_.upper_bound(offset);
    if (it != ranges_.begin()) {
      --it;
      const uint64_t start = it->first;
      const std::string& bytes = it->second;
      if (offset - start <= bytes.size() && length <= bytes.size() - (offset - start)) {
        ++local_reads_;
        return bytes.substr(offset - start, length);
      }
    }
  }
  absl::StatusOr<std::string> data = inner_->ReadAt(offset, length);
  if (!data.ok()) return data;
  std::lock_guard<std::mutex> lock(mu_);
  fetched_ = true;
  std::string& slot = ranges_[offset];
  if (slot.size() < data->size()) slot = *data;
  return data;
}

bool IndexRangeReader::AllLocal() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !fetched_;
}

int IndexRangeReader::local_reads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return local_reads_;
}

absl::Status IndexRangeReader::Save() const {
  std::string out(kMagic);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [offset, bytes] : ranges_) {
      PutU64(out, offset);
      PutU64(out, bytes.size());
      out += bytes;
    }
  }
  if (out.size() > kMaxFileBytes) return absl::OkStatus();  // not worth keeping
  return WriteFileAtomically(path_, out, 0600);
}

void IndexRangeReader::Discard() const { ::unlink(path_.c_str()); }

absl::StatusOr<format::LayerIndex> OpenLayerIndexKeepingBytes(std::shared_ptr<BlobReader> blob,
                                                              const oci::Descriptor& layer,
                                                              const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = absl::StrCat(dir, "/", layer.digest.hex());
  IndexRangeReader reader(blob, path);
  absl::StatusOr<format::LayerIndex> index =
      format::OpenLayerIndex(reader, layer.media_type, layer.annotations);
  if (!index.ok()) {
    if (reader.local_reads() == 0) return index;
    LogWarn("saved layer index bytes do not open the index; fetching them again",
            {{"layer", layer.digest.ToString()}, {"error", index.status().ToString()}});
    reader.Discard();
    IndexRangeReader fresh(blob, path);
    index = format::OpenLayerIndex(fresh, layer.media_type, layer.annotations);
    if (index.ok()) fresh.Save().IgnoreError();
    return index;
  }
  if (!reader.AllLocal()) {
    if (absl::Status s = reader.Save(); !s.ok()) {
      LogWarn("cannot save layer index bytes; a restart fetches them again",
              {{"layer", layer.digest.ToString()}, {"error", s.ToString()}});
    }
  }
  return index;
}

void DropIndexBytesExcept(const std::string& dir, const std::set<std::string>& used_digests) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (used_digests.count("sha256:" + name) > 0) continue;
    std::error_code rm;
    std::filesystem::remove(entry.path(), rm);
    if (rm) {
      LogWarn("cannot remove kept layer index bytes",
              {{"path", entry.path().string()}, {"error", rm.message()}});
    }
  }
}

}  // namespace lazypull::remote
