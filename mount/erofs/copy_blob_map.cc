#include "mount/erofs/copy_blob_map.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"

namespace lazypull::mount::erofs {
namespace {

constexpr char kMagic[] = "lazypull-copy-blob-map v1";

}  // namespace

std::optional<CopyBlobMap> MapLazyBlobToCopy(const BlobLayout& lazy, std::string fingerprint,
                                             bool lazy_is_tar, const std::string& method,
                                             const std::vector<uint64_t>& payloads) {
  CopyBlobMap map;
  map.fingerprint = std::move(fingerprint);
  map.blob_size = lazy.size;
  if (method == "blob") {
    // The copy is the blob layout itself (PlanBlobLayout), holes and padding included.
    if (lazy_is_tar) return std::nullopt;
    if (lazy.size > 0) map.extents.push_back({0, lazy.size, 0});
    return map;
  }
  if (method != "tar" || payloads.empty()) return std::nullopt;
  for (const BlobExtent& e : lazy.extents) {
    if (e.ino == 0 || e.ino > payloads.size()) return std::nullopt;
    map.extents.push_back({e.offset, e.length, payloads[e.ino - 1] + e.file_offset});
  }
  return map;
}

std::string SerializeCopyBlobMap(const CopyBlobMap& map) {
  std::string out =
      fmt::format("{}\n{} {} {}\n", kMagic, map.fingerprint, map.blob_size, map.extents.size());
  for (const CopyBlobMap::Extent& e : map.extents) {
    out += fmt::format("{} {} {}\n", e.blob_offset, e.length, e.data_offset);
  }
  return out;
}

absl::StatusOr<CopyBlobMap> ParseCopyBlobMap(std::string_view text) {
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(text.data(), text.size()), '\n', absl::SkipEmpty());
  if (lines.size() < 2 || lines[0] != kMagic) {
    return absl::InvalidArgumentError("copy blob map: bad header");
  }
  CopyBlobMap map;
  uint64_t count = 0;
  std::vector<absl::string_view> head = absl::StrSplit(lines[1], ' ');
  if (head.size() != 3 || head[0].size() != 16 || !absl::SimpleAtoi(head[1], &map.blob_size) ||
      !absl::SimpleAtoi(head[2], &count) || count != lines.size() - 2) {
    return absl::InvalidArgumentError("copy blob map: bad line 2");
  }
  map.fingerprint = std::string(head[0]);
  uint64_t end = 0;
  for (size_t i = 2; i < lines.size(); ++i) {
    std::vector<absl::string_view> f = absl::StrSplit(lines[i], ' ');
    CopyBlobMap::Extent e;
    if (f.size() != 3 || !absl::SimpleAtoi(f[0], &e.blob_offset) ||
        !absl::SimpleAtoi(f[1], &e.length) || !absl::SimpleAtoi(f[2], &e.data_offset) ||
        e.length == 0 || e.blob_offset < end || e.length > map.blob_size - e.blob_offset ||
        e.data_offset + e.length < e.data_offset) {
      return absl::InvalidArgumentError(fmt::format("copy blob map: bad line {}", i + 1));
    }
    end = e.blob_offset + e.length;
    map.extents.push_back(e);
  }
  return map;
}

absl::StatusOr<CopyBlobMap> ReadCopyBlobMap(const std::string& copy_dir) {
  const std::string path = copy_dir + "/" + kCopyBlobMapFile;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: {}", path, std::strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<CopyBlobMap> map = ParseCopyBlobMap(text.str());
  if (!map.ok()) {
    return absl::Status(map.status().code(),
                        fmt::format("{}: {}", path, std::string(map.status().message())));
  }
  return map;
}

absl::Status ReadThroughCopyMap(const CopyBlobMap& map, const UniqueFd& data,
                                const std::string& what, uint64_t offset, char* buf, size_t n) {
  std::memset(buf, 0, n);
  // The first extent ending after `offset`.
  auto it = std::upper_bound(
      map.extents.begin(), map.extents.end(), offset,
      [](uint64_t off, const CopyBlobMap::Extent& e) { return off < e.blob_offset + e.length; });
  for (; it != map.extents.end() && it->blob_offset < offset + n; ++it) {
    const uint64_t begin = std::max(offset, it->blob_offset);
    const uint64_t end = std::min<uint64_t>(offset + n, it->blob_offset + it->length);
    const uint64_t at = it->data_offset + (begin - it->blob_offset);
    char* dst = buf + (begin - offset);
    const size_t len = static_cast<size_t>(end - begin);
    for (size_t done = 0; done < len;) {
      ssize_t got = ::pread(data.get(), dst + done, len - done, static_cast<off_t>(at + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        return absl::DataLossError(fmt::format("{}: reading its local copy at {}: {}", what,
                                               at + done,
                                               got < 0 ? std::strerror(errno) : "end of file"));
      }
      done += static_cast<size_t>(got);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> CopyBlobSource::ReadAt(uint64_t offset, char* buf, size_t length) {
  if (offset >= map_.blob_size) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(length, map_.blob_size - offset));
  if (absl::Status s = ReadThroughCopyMap(map_, data_, "layer " + layer_id_, offset, buf, n);
      !s.ok()) {
    return s;
  }
  return n;
}

}  // namespace lazypull::mount::erofs
