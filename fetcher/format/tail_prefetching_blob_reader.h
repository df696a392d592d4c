// TailPrefetchingBlobReader: a BlobReader view for opening a layer's index in one round trip.
// Lazy formats keep their index at the END of the blob (eStargz: TOC then footer; zstd:chunked:
// manifest, tar-split, footer), and a reader finds the index by reading the footer first. This
// view fetches the last `tail_bytes` of the blob in ONE request the first time a byte of that
// tail is read and serves later reads inside it from memory; a read that starts before the tail
// fetches only the part before it. So "footer, then TOC" costs one request when the TOC fits
// the tail, and never more requests than without the view.
//
// Thread-safety: thread-safe. `base` must outlive the view.
#ifndef LAZYPULL_FETCHER_FORMAT_TAIL_PREFETCHING_BLOB_READER_H_
#define LAZYPULL_FETCHER_FORMAT_TAIL_PREFETCHING_BLOB_READER_H_

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "lazypull/blob_reader.h"

namespace lazypull::format {

class TailPrefetchingBlobReader : public BlobReader {
 public:
  // `tail_bytes` is clamped to the blob size.
  TailPrefetchingBlobReader(BlobReader& base, uint64_t tail_bytes);

  uint64_t Size() const override { return base_.Size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override;

  // Bytes fetched for the tail so far (0 until it is first touched).
  uint64_t tail_fetched() const;

 private:
  // The tail, fetched on first use; its error is returned to this caller (and retried next).
  absl::StatusOr<const std::string*> Tail();

  BlobReader& base_;
  const uint64_t tail_start_;
  mutable std::mutex mu_;
  std::optional<std::string> tail_;
};

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_TAIL_PREFETCHING_BLOB_READER_H_
