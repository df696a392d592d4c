// BlobReader: random access to the bytes of one immutable blob (a layer in a registry, a file
// on disk, a buffer in a test). Format readers and the FUSE layer read through it, so the
// network sits behind this one narrow seam and a test can inject any fault.
#ifndef LAZYPULL_BLOB_READER_H_
#define LAZYPULL_BLOB_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

  // Reads several ranges; implementations may merge adjacent ones into one request. The
  // result has one string per range, in order. Default: one ReadAt each.
  virtual absl::StatusOr<std::vector<std::string>> ReadRanges(const std::vector<ByteRange>& ranges);
};

// A BlobReader over an in-memory buffer (tests, small local blobs).
std::unique_ptr<BlobReader> NewStringBlobReader(std::string data);
// A BlobReader over a local file (pread). NotFound if it cannot be opened.
absl::StatusOr<std::unique_ptr<BlobReader>> NewFileBlobReader(const std::string& path);

}  // namespace lazypull

#endif  // LAZYPULL_BLOB_READER_H_
