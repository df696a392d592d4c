#include "mount/erofs/lazy_blob.h"

#include <algorithm>
#include <cstring>

#include "fmt/format.h"

namespace lazypull::mount::erofs {

absl::StatusOr<size_t> LazyBlobSource::ReadAt(uint64_t offset, char* buf, size_t length) {
  if (offset >= layout_->size) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(length, layout_->size - offset));
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
