#include "mount/erofs/lazy_blob.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fmt/format.h"

namespace lazypull::mount::erofs {

void LazyBlobSource::UseLocalCopy(std::shared_ptr<const UniqueFd> file, CopyBlobMap map) {
  auto shared = std::make_shared<const CopyBlobMap>(std::move(map));
  std::lock_guard<std::mutex> lock(mu_);
  local_ = std::move(file);
  map_ = std::move(shared);
}

absl::StatusOr<size_t> LazyBlobSource::ReadAt(uint64_t offset, char* buf, size_t length) {
  if (offset >= layout_->size) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(length, layout_->size - offset));
  std::shared_ptr<const UniqueFd> local;
  std::shared_ptr<const CopyBlobMap> map;
  {
    std::lock_guard<std::mutex> lock(mu_);
    local = local_;
    map = map_;
  }
  if (local != nullptr) {
    if (absl::Status s =
            ReadThroughCopyMap(*map, *local, "layer " + reader_->layer_id(), offset, buf, n);
        !s.ok()) {
      return s;
    }
    return n;
  }
  std::memset(buf, 0, n);
  for (const BlobExtent& e : layout_->Find(offset, n)) {
    const uint64_t begin = std::max(offset, e.offset);
    const uint64_t end = std::min(offset + n, e.offset + e.length);
    const uint64_t want = end - begin;
    absl::StatusOr<size_t> got =
        reader_->Read(e.ino, e.file_offset + (begin - e.offset), buf + (begin - offset), want);
    if (!got.ok()) return got.status();
    if (*got != want) {
      return absl::DataLossError(fmt::format("layer {}: file {} ended {} bytes early in the blob",
                                             reader_->layer_id(), reader_->index().Path(e.ino),
                                             want - *got));
    }
  }
  return n;
}

}  // namespace lazypull::mount::erofs
