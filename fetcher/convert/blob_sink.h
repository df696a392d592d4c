// BlobSink: where a converter writes a new blob. Counts bytes and computes the blob's sha256
// as it goes, so the descriptor is known the moment the blob is complete.
#ifndef LAZYPULL_FETCHER_CONVERT_BLOB_SINK_H_
#define LAZYPULL_FETCHER_CONVERT_BLOB_SINK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lazypull/digest.h"

namespace lazypull::convert {

// Not thread-safe: one writer appends in order.
class BlobSink {
 public:
  virtual ~BlobSink() = default;
  // Appends `data`. Errors keep the OS error text and name the destination.
  virtual absl::Status Append(std::string_view data) = 0;
  // Bytes appended so far (= the offset the next Append starts at).
  virtual uint64_t size() const = 0;
  // Flushes and returns the digest of everything appended. The sink must not be used after.
  virtual absl::StatusOr<Digest> Finish() = 0;
};

// A sink writing to a new file at `path` (created or truncated, mode 0644).
absl::StatusOr<std::unique_ptr<BlobSink>> NewFileBlobSink(const std::string& path);
// A sink appending to `*out` (tests). `out` must outlive the sink.
std::unique_ptr<BlobSink> NewStringBlobSink(std::string* out);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_BLOB_SINK_H_
