#include "fetcher/format/tail_prefetching_blob_reader.h"

#include <algorithm>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::format {

TailPrefetchingBlobReader::TailPrefetchingBlobReader(BlobReader& base, uint64_t tail_bytes)
    : base_(base), tail_start_(base.Size() - std::min(tail_bytes, base.Size())) {}

absl::StatusOr<const std::string*> TailPrefetchingBlobReader::Tail() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!tail_) {
    absl::StatusOr<std::string> got = base_.ReadAt(tail_start_, base_.Size() - tail_start_);
    if (!got.ok()) return got.status();
    tail_ = std::move(*got);
  }
  return &*tail_;
}

absl::StatusOr<std::string> TailPrefetchingBlobReader::ReadAt(uint64_t offset, uint64_t length) {
  const uint64_t size = base_.Size();
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(
        fmt::format("range [{}, +{}) is past the blob end {}", offset, length, size));
  }
  const uint64_t end = offset + length;
  if (end <= tail_start_ || length == 0) return base_.ReadAt(offset, length);
  absl::StatusOr<const std::string*> tail = Tail();
  if (!tail.ok()) return tail.status();
  if (offset >= tail_start_) return (*tail)->substr(offset - tail_start_, length);
  absl::StatusOr<std::string> head = base_.ReadAt(offset, tail_start_ - offset);
  if (!head.ok()) return head.status();
  head->append(**tail, 0, end - tail_start_);
  return head;
}

uint64_t TailPrefetchingBlobReader::tail_fetched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tail_ ? tail_->size() : 0;
}

}  // namespace lazypull::format
