#include "mount/erofs/lazy_blob.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fmt/format.h"

namespace lazypull::mount::erofs {

void LazyBlobSource::UseLocalCopy(std::shared_ptr<const UniqueFd> file,
                                  std::vector<uint64_t> payloads) {
  auto shared = std::make_shared<const std::vector<uint64_t>>(std::move(payloads));
  std::lock_guard<std::mutex> lock(mu_);
  local_ = std::move(file);
  payloads_ = std::move(shared);
}

absl::StatusOr<size_t> LazyBlobSource::ReadLocal(const UniqueFd& file,
                                                 const std::vector<uint64_t>& payloads,
                                                 uint64_t offset, char* buf, size_t n) {
  auto pread_all = [&](uint64_t at, char* dst, size_t len) -> absl::Status {
    for (size_t done = 0; done < len;) {
      ssize_t got = ::pread(file.get(), dst + done, len - done, static_cast<off_t>(at + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        return absl::DataLossError(fmt::format("layer {}: reading its local copy at {}: {}",
                                               reader_->layer_id(), at + done,
                                               got < 0 ? std::strerror(errno) : "end of file"));
      }
      done += static_cast<size_t>(got);
    }
    return absl::OkStatus();
  };
  if (payloads.empty()) {  // the same layout: one read
    if (absl::Status s = pread_all(offset, buf, n); !s.ok()) return s;
    return n;
  }
  std::memset(buf, 0, n);
  for (const BlobExtent& e : layout_->Find(offset, n)) {
    const uint64_t begin = std::max(offset, e.offset);
    const uint64_t end = std::min(offset + n, e.offset + e.length);
    const uint64_t at = payloads[e.ino - 1] + e.file_offset + (begin - e.offset);
    if (absl::Status s = pread_all(at, buf + (begin - offset), end - begin); !s.ok()) return s;
  }
  return n;
}

absl::StatusOr<size_t> LazyBlobSource::ReadAt(uint64_t offset, char* buf, size_t length) {
  if (offset >= layout_->size) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(length, layout_->size - offset));
  std::shared_ptr<const UniqueFd> local;
  std::shared_ptr<const std::vector<uint64_t>> payloads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    local = local_;
    payloads = payloads_;
  }
  if (local != nullptr) return ReadLocal(*local, *payloads, offset, buf, n);
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
