// BlobReader: random access to the bytes of one immutable blob (a layer in a registry, a file
// on disk, a buffer in a test). Format readers and the FUSE layer read through it, so the
// network sits behind this one narrow seam and a test can inject any fault.
#ifndef LAZYPULL_BLOB_READER_H_
#define LAZYPULL_BLOB_READER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lazypull {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
};

// Implementations are thread-safe: many FUSE threads read concurrently.
class BlobReader {
 public:
  virtual ~BlobReader() = default;

  // Total size of the blob in bytes.
  virtual uint64_t Size() const = 0;

  // Returns exactly `length` bytes starting at `offset`. A range past the end is
  // OutOfRange; transport errors keep their code (Unavailable, DeadlineExceeded, ...) and the
  // message names the blob. Never returns fewer bytes than asked with OK.
  virtual absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) = 0;

  // Receives streamed bytes: `data` is blob[offset, offset + data.size()).
  using Sink = std::function<absl::Status(uint64_t offset, std::string_view data)>;

  // Streams every byte of `ranges` (sorted by offset, disjoint, non-empty) to `sink`, each
  // byte exactly once: within one range bytes arrive in order; different ranges may arrive in
  // any order, and `sink` may be called concurrently for DIFFERENT ranges (never for the same
  // one). Lets callers use bytes as soon as they arrive instead of after the whole request, and
  // lets a remote implementation fetch several ranges in one request. Returns OK once every
  // byte was delivered; on error some prefix of each range may have been delivered. A sink
  // error aborts the transfer and is returned as is. Default: one ReadAt per range, in order.
  virtual absl::Status StreamRanges(std::span<const ByteRange> ranges, const Sink& sink);

  // Makes reads in progress end soon (within about a second, even on a stalled connection)
  // and later reads fail at once, with Cancelled. For shutdown and snapshot removal.
  // Default: nothing (for readers that never block long).
  virtual void Cancel() {}

  // When bulk reads that can wait (a layer's background fetch) should be sent: a time in the
  // future while the preferred source of this blob is filling itself and a read now would go
  // to a costlier one (a pull-through cache copying the blob from the registry: reading the
  // registry meanwhile costs its egress once more per node). nullopt: now. Default: nullopt.
  virtual std::optional<std::chrono::steady_clock::time_point> BulkReadsReadyAt() {
    return std::nullopt;
  }

  // Tells the reader that bytes it delivered in [offset, offset + length) failed
  // verification. Returns true when a source that delivered them is now excluded, so reading
  // them again asks another source (a registry mirror that holds other bytes under the
  // digest); false when a second read would go the same way. Default: false.
  virtual bool ReportCorruption(uint64_t offset, uint64_t length) {
    (void)offset;
    (void)length;
    return false;
  }
};

// A BlobReader over an in-memory buffer (tests, small local blobs).
std::unique_ptr<BlobReader> NewStringBlobReader(std::string data);
// A BlobReader over a local file (pread). NotFound if it cannot be opened.
absl::StatusOr<std::unique_ptr<BlobReader>> NewFileBlobReader(const std::string& path);

}  // namespace lazypull

#endif  // LAZYPULL_BLOB_READER_H_
