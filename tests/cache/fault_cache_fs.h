// FaultCacheFs: a CacheFs that forwards to the real one but can inject one fault per
// operation, or run a hook (e.g. block forever so a test can SIGKILL the process mid-write).
#ifndef LAZYPULL_TESTS_CACHE_FAULT_CACHE_FS_H_
#define LAZYPULL_TESTS_CACHE_FAULT_CACHE_FS_H_

#include <errno.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "fetcher/cache/cache_fs.h"

namespace lazypull::testing {

class FaultCacheFs : public CacheFs {
 public:
  FaultCacheFs() : real_(NewPosixCacheFs()) {}

  // errno to fail the next (and every following) WriteAll with, after writing half the data;
  // 0 disables.
  std::atomic<int> write_errno{0};
  // errno to fail every Rename with; 0 disables.
  std::atomic<int> rename_errno{0};
  // Runs after half of the data is written (before the rest); may block forever.
  std::function<void()> on_half_written;
  // Runs before a rename; may block forever.
  std::function<void()> before_rename;

  absl::Status MakeDirs(const std::string& path) override { return real_->MakeDirs(path); }
  absl::StatusOr<UniqueFd> OpenForRead(const std::string& path) override {
    return real_->OpenForRead(path);
  }
  absl::StatusOr<UniqueFd> CreateExclusive(const std::string& path) override {
    return real_->CreateExclusive(path);
  }
  absl::Status WriteAll(int fd, std::string_view data, const std::string& path) override {
    std::string_view half = data.substr(0, data.size() / 2);
    if (int err = write_errno.load(); err != 0) {
      if (absl::Status s = real_->WriteAll(fd, half, path); !s.ok()) return s;
      return absl::ErrnoToStatus(err, "write " + path);
    }
    if (on_half_written) {
      if (absl::Status s = real_->WriteAll(fd, half, path); !s.ok()) return s;
      on_half_written();
      return real_->WriteAll(fd, data.substr(half.size()), path);
    }
    return real_->WriteAll(fd, data, path);
  }
  absl::Status SetMtime(int fd, int64_t mtime_ns, const std::string& path) override {
    return real_->SetMtime(fd, mtime_ns, path);
  }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (before_rename) before_rename();
    if (int err = rename_errno.load(); err != 0) {
      return absl::ErrnoToStatus(err, "rename " + from + " to " + to);
    }
    return real_->Rename(from, to);
  }
  absl::Status Remove(const std::string& path) override { return real_->Remove(path); }
  absl::StatusOr<size_t> ReadAt(int fd, uint64_t offset, char* buf, size_t length,
                                const std::string& path) override {
    return real_->ReadAt(fd, offset, buf, length, path);
  }
  absl::StatusOr<std::vector<CacheDirEntry>> ListDir(const std::string& path) override {
    return real_->ListDir(path);
  }
  absl::StatusOr<CacheFileInfo> Stat(const std::string& path) override { return real_->Stat(path); }
  absl::StatusOr<UniqueFd> LockFile(const std::string& path) override {
    return real_->LockFile(path);
  }

 private:
  std::shared_ptr<CacheFs> real_;
};

// Deterministic pseudo-random bytes (the crash helper and the test must agree on them).
inline std::string PatternBytes(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x);
  }
  return out;
}

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_CACHE_FAULT_CACHE_FS_H_
