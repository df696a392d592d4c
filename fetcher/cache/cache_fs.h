// CacheFs: the file-system operations the chunk cache needs, and nothing more.
//
// The chunk cache does all of its disk I/O through this interface, so a test can wrap the
// real implementation and inject one fault (ENOSPC on write, a failed rename, a process that
// blocks mid-write and gets killed). Implementations must be thread-safe: the cache calls
// them from many threads without holding a lock.
//
// Errors are absl::Status values built from errno (absl::ErrnoToStatus), so ENOSPC and EDQUOT
// are ResourceExhausted, ENOENT is NotFound, EACCES/EPERM are PermissionDenied; every message
// names the operation and the path.
#ifndef LAZYPULL_FETCHER_CACHE_CACHE_FS_H_
#define LAZYPULL_FETCHER_CACHE_CACHE_FS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull {

struct CacheDirEntry {
  std::string name;  // base name, no directory part
  bool is_dir = false;
};

struct CacheFileInfo {
  uint64_t size = 0;
  int64_t mtime_ns = 0;  // since the Unix epoch
  bool is_regular = false;
};

class CacheFs {
 public:
  virtual ~CacheFs() = default;

  // mkdir -p with mode 0700; `path` itself is made exactly 0700 also when it already existed.
  virtual absl::Status MakeDirs(const std::string& path) = 0;

  // Opens `path` read-only (O_CLOEXEC). NotFound if it does not exist.
  virtual absl::StatusOr<UniqueFd> OpenForRead(const std::string& path) = 0;

  // Creates a new file for writing (O_CREAT|O_EXCL, mode 0400: private to the daemon's user,
  // and nothing rewrites a cached chunk in place by accident). AlreadyExists if `path` exists.
  virtual absl::StatusOr<UniqueFd> CreateExclusive(const std::string& path) = 0;

  // Writes all of `data` to `fd` (retrying short writes and EINTR). `path` is for messages.
  virtual absl::Status WriteAll(int fd, std::string_view data, const std::string& path) = 0;

  // Sets the file's mtime (the cache's persistent LRU stamp) to `mtime_ns`.
  virtual absl::Status SetMtime(int fd, int64_t mtime_ns, const std::string& path) = 0;

  // rename(from, to), atomically replacing `to`.
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;

  // unlink(path). NotFound if it does not exist.
  virtual absl::Status Remove(const std::string& path) = 0;

  // pread into `buf` until `length` bytes or end of file; returns the bytes read (fewer than
  // `length` only at end of file). `path` is for messages.
  virtual absl::StatusOr<size_t> ReadAt(int fd, uint64_t offset, char* buf, size_t length,
                                        const std::string& path) = 0;

  // The entries of directory `path` (without "." and ".."), in no particular order.
  virtual absl::StatusOr<std::vector<CacheDirEntry>> ListDir(const std::string& path) = 0;

  // lstat(path).
  virtual absl::StatusOr<CacheFileInfo> Stat(const std::string& path) = 0;

  // Opens (creating) `path` and takes an exclusive, non-blocking flock on it. The lock is
  // held until the returned fd is closed (or the process dies). FailedPrecondition if another
  // open file description holds it.
  virtual absl::StatusOr<UniqueFd> LockFile(const std::string& path) = 0;
};

// The real implementation over POSIX syscalls. Stateless; one instance may be shared.
std::shared_ptr<CacheFs> NewPosixCacheFs();

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_CACHE_CACHE_FS_H_
