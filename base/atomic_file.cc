#include "base/atomic_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull {
namespace {

absl::Status Errno(int err, std::string_view what) {
  return absl::ErrnoToStatus(err, std::string(what));
}

std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::StatusOr<AtomicFile> AtomicFile::Create(std::string path, mode_t mode) {
  std::string temp = path + ".tmp-XXXXXX";
  UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
  if (!fd.valid()) return Errno(errno, fmt::format("create {}", temp));
  AtomicFile file(std::move(path), std::move(temp), std::move(fd));
  // mkostemp creates 0600; the target's mode is set here, exactly (no umask).
  if (::fchmod(file.fd(), mode) != 0) {
    return Errno(errno, fmt::format("chmod {:o} {}", mode, file.temp_));
  }
  return file;
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_(std::exchange(other.temp_, std::string())),
      fd_(std::move(other.fd_)) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_ = std::exchange(other.temp_, std::string());
    fd_ = std::move(other.fd_);
  }
  return *this;
}

AtomicFile::~AtomicFile() { Abandon(); }

void AtomicFile::Abandon() {
  fd_.Reset();
  if (!temp_.empty()) ::unlink(temp_.c_str());
  temp_.clear();
}

absl::Status AtomicFile::Append(std::string_view data) {
  if (temp_.empty())
    return absl::FailedPreconditionError(fmt::format("{}: already committed", path_));
  while (!data.empty()) {
    ssize_t n = ::write(fd_.get(), data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, fmt::format("write {}", temp_));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  if (temp_.empty())
    return absl::FailedPreconditionError(fmt::format("{}: already committed", path_));
  absl::Status st;
  if (::fsync(fd_.get()) != 0) {
    st = Errno(errno, fmt::format("fsync {}", temp_));
  } else if (::close(fd_.Release()) != 0) {
    st = Errno(errno, fmt::format("close {}", temp_));
  } else if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    st = Errno(errno, fmt::format("rename {} to {}", temp_, path_));
  }
  if (!st.ok()) {
    Abandon();
    return st;
  }
  temp_.clear();  // it is `path_` now
  return SyncDirectory(DirectoryOf(path_));
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view content, mode_t mode) {
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(path, mode);
  if (!file.ok()) return file.status();
  if (absl::Status st = file->Append(content); !st.ok()) return st;
  return file->Commit();
}

absl::Status SyncDirectory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno(errno, fmt::format("open directory {}", dir));
  if (::fsync(fd.get()) != 0) return Errno(errno, fmt::format("fsync directory {}", dir));
  return absl::OkStatus();
}

}  // namespace lazypull
