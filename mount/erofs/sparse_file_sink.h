// Writing graduated copies without holding their bytes: ZeroAwareSink takes a file's bytes in
// order, with runs of zeros given as a length only (no buffer, whatever their size), and
// SparseFileSink writes them to a new local file in which every all-zero 4 KiB block is a hole,
// so a 100 GiB sparse file costs neither memory nor disk.
//
// Not thread-safe: one writer appends in order.
#ifndef LAZYPULL_MOUNT_EROFS_SPARSE_FILE_SINK_H_
#define LAZYPULL_MOUNT_EROFS_SPARSE_FILE_SINK_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "lazypull/digest.h"

namespace lazypull::mount::erofs {

// Largest piece a graduation reads or writes at once (its memory bound per stream).
inline constexpr size_t kGraduationPieceBytes = 1 << 20;

class ZeroAwareSink {
 public:
  virtual ~ZeroAwareSink() = default;
  // Appends `data`. Errors name the destination.
  virtual absl::Status Append(std::string_view data) = 0;
  // Appends `n` zero bytes without materializing them.
  virtual absl::Status AppendZeros(uint64_t n) = 0;
  // Bytes appended so far.
  virtual uint64_t size() const = 0;
};

class SparseFileSink : public ZeroAwareSink {
 public:
  struct Options {
    // sha256 of everything appended (zeros included, fed from a small static buffer: CPU,
    // not memory), returned by Finish. Off: Finish returns an empty digest.
    bool hash = false;
    // Once set, Append/AppendZeros fail with Cancelled (a long copy must not hold up a
    // shutdown or a release). May be null.
    const std::atomic<bool>* cancel = nullptr;
  };
  // Creates (or truncates) `path`, mode 0600 while written.
  static absl::StatusOr<std::unique_ptr<SparseFileSink>> Create(const std::string& path,
                                                                Options options);

  absl::Status Append(std::string_view data) override;
  absl::Status AppendZeros(uint64_t n) override;
  uint64_t size() const override { return written_ + pending_.size(); }
  // Sets the file's size (trailing holes), fsyncs it, makes it read-only for root (0400) and
  // closes it. Returns the sha256 when hashing. The sink must not be used afterwards.
  absl::StatusOr<Digest> Finish();

 private:
  SparseFileSink(std::string path, UniqueFd fd, Options options);
  absl::Status Cancelled() const;
  // Writes pending_ (one whole block, or the tail at Finish) unless it is all zeros.
  absl::Status FlushBlock();

  const std::string path_;
  UniqueFd fd_;
  const Options options_;
  std::unique_ptr<Sha256> sha_;  // null when not hashing
  std::string pending_;          // < 4 KiB: the current block
  uint64_t written_ = 0;         // bytes before pending_ (written or left as holes)
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_SPARSE_FILE_SINK_H_
