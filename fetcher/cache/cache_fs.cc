#include "fetcher/cache/cache_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "fmt/format.h"

namespace lazypull {
namespace {

absl::Status ErrnoError(int err, std::string_view op, const std::string& path) {
  return absl::ErrnoToStatus(err, fmt::format("{} {}", op, path));
}

class PosixCacheFs final : public CacheFs {
 public:
  absl::Status MakeDirs(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("chunk cache: empty directory path");
    for (size_t pos = 1; pos <= path.size(); ++pos) {
      if (pos != path.size() && path[pos] != '/') continue;
      std::string prefix = path.substr(0, pos);
      if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
        return ErrnoError(errno, "mkdir", prefix);
      }
    }
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat", path);
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          fmt::format("chunk cache: {} exists and is not a directory", path));
    }
    // A directory made by someone else (or by an older version) may be wider.
    if ((st.st_mode & 07777) != 0700 && ::chmod(path.c_str(), 0700) != 0) {
      return ErrnoError(errno, "chmod 0700", path);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<UniqueFd> OpenForRead(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError(errno, "open", path);
    return UniqueFd(fd);
  }

  absl::StatusOr<UniqueFd> CreateExclusive(const std::string& path) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
    if (fd < 0) return ErrnoError(errno, "create", path);
    return UniqueFd(fd);
  }

  absl::Status WriteAll(int fd, std::string_view data, const std::string& path) override {
    while (!data.empty()) {
      ssize_t n = ::write(fd, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "write", path);
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  absl::Status SetMtime(int fd, int64_t mtime_ns, const std::string& path) override {
    struct timespec times[2];
    times[0].tv_sec = 0;
    times[0].tv_nsec = UTIME_OMIT;  // atime is not ours: relatime/noatime make it unreliable
    times[1].tv_sec = mtime_ns / 1000000000;
    times[1].tv_nsec = mtime_ns % 1000000000;
    if (::futimens(fd, times) != 0) return ErrnoError(errno, "futimens", path);
    return absl::OkStatus();
  }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoError(errno, "rename " + from + " to", to);
    }
    return absl::OkStatus();
  }

  absl::Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoError(errno, "unlink", path);
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> ReadAt(int fd, uint64_t offset, char* buf, size_t length,
                                const std::string& path) override {
    size_t done = 0;
    while (done < length) {
      ssize_t n = ::pread(fd, buf + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "pread", path);
      }
      if (n == 0) break;  // end of file
      done += static_cast<size_t>(n);
    }
    return done;
  }

  absl::StatusOr<std::vector<CacheDirEntry>> ListDir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoError(errno, "opendir", path);
    std::vector<CacheDirEntry> out;
    errno = 0;
    while (struct dirent* e = ::readdir(dir)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = ::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 S_ISDIR(st.st_mode);
      }
      out.push_back({std::move(name), is_dir});
      errno = 0;
    }
    int err = errno;
    ::closedir(dir);
    if (err != 0) return ErrnoError(err, "readdir", path);
    return out;
  }

  absl::StatusOr<CacheFileInfo> Stat(const std::string& path) override {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat", path);
    CacheFileInfo info;
    info.size = static_cast<uint64_t>(st.st_size);
    info.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    info.is_regular = S_ISREG(st.st_mode);
    return info;
  }

  absl::StatusOr<UniqueFd> LockFile(const std::string& path) override {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) return ErrnoError(errno, "open lock file", path);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        return absl::FailedPreconditionError(fmt::format(
            "chunk cache: {} is locked: the cache directory is in use by another owner", path));
      }
      return ErrnoError(errno, "flock", path);
    }
    return fd;
  }
};

}  // namespace

std::shared_ptr<CacheFs> NewPosixCacheFs() { return std::make_shared<PosixCacheFs>(); }

}  // namespace lazypull
