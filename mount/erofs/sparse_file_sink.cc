#include "mount/erofs/sparse_file_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "fmt/format.h"

namespace lazypull::mount::erofs {
namespace {

constexpr uint64_t kBlock = 4096;
// Zeros fed to the hash per Update; also how often a long zero run checks for cancellation.
constexpr size_t kZeroPiece = 64 << 10;
constexpr uint64_t kCancelCheckBytes = 1ull << 30;

const char* Zeros() {
  static const char* const zeros = new char[kZeroPiece]();
  return zeros;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SparseFileSink>> SparseFileSink::Create(const std::string& path,
                                                                       Options options) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, fmt::format("create {}", path));
  return std::unique_ptr<SparseFileSink>(new SparseFileSink(path, std::move(fd), options));
}

SparseFileSink::SparseFileSink(std::string path, UniqueFd fd, Options options)
    : path_(std::move(path)), fd_(std::move(fd)), options_(options) {
  if (options_.hash) sha_ = std::make_unique<Sha256>();
  pending_.reserve(kBlock);
}

absl::Status SparseFileSink::Cancelled() const {
  if (options_.cancel != nullptr && options_.cancel->load()) {
    return absl::CancelledError(fmt::format("writing {} cancelled", path_));
  }
  return absl::OkStatus();
}

absl::Status SparseFileSink::Append(std::string_view data) {
  if (absl::Status s = Cancelled(); !s.ok()) return s;
  if (sha_ != nullptr) sha_->Update(data);
  while (!data.empty()) {
    // Fill up to the next block boundary, then decide per whole block.
    const size_t take = std::min<size_t>(data.size(), kBlock - pending_.size());
    pending_.append(data.substr(0, take));
    data.remove_prefix(take);
    if (pending_.size() == kBlock) {
      if (absl::Status s = FlushBlock(); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status SparseFileSink::AppendZeros(uint64_t n) {
  if (absl::Status s = Cancelled(); !s.ok()) return s;
  // Complete the current block through Append (it may hold data).
  if (!pending_.empty()) {
    const uint64_t fill = std::min<uint64_t>(n, kBlock - pending_.size());
    if (absl::Status s = Append(std::string_view(Zeros(), fill)); !s.ok()) return s;
    n -= fill;
  }
  // Whole blocks: a hole, the hash fed from the static buffer.
  const uint64_t whole = n / kBlock * kBlock;
  if (sha_ != nullptr) {
    for (uint64_t done = 0; done < whole;) {
      const uint64_t take = std::min<uint64_t>(kZeroPiece, whole - done);
      sha_->Update(std::string_view(Zeros(), take));
      done += take;
      if (done % kCancelCheckBytes == 0) {
        if (absl::Status s = Cancelled(); !s.ok()) return s;
      }
    }
  }
  written_ += whole;
  return Append(std::string_view(Zeros(), n - whole));
}

absl::Status SparseFileSink::FlushBlock() {
  const bool zero = std::all_of(pending_.begin(), pending_.end(), [](char c) { return c == 0; });
  if (!zero) {
    size_t done = 0;
    while (done < pending_.size()) {
      ssize_t n = ::pwrite(fd_.get(), pending_.data() + done, pending_.size() - done,
                           static_cast<off_t>(written_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::ErrnoToStatus(errno, fmt::format("write {}", path_));
      done += static_cast<size_t>(n);
    }
  }
  written_ += pending_.size();
  pending_.clear();
  return absl::OkStatus();
}

absl::StatusOr<Digest> SparseFileSink::Finish() {
  if (!pending_.empty()) {
    if (absl::Status s = FlushBlock(); !s.ok()) return s;
  }
  if (::ftruncate(fd_.get(), static_cast<off_t>(written_)) != 0 || ::fsync(fd_.get()) != 0 ||
      ::fchmod(fd_.get(), 0400) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("finish {}", path_));
  }
  fd_.Reset();
  return sha_ != nullptr ? sha_->Finish() : Digest();
}

}  // namespace lazypull::mount::erofs
