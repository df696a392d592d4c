#include "server/disk_usage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/unique_fd.h"

namespace lazypull {
namespace {

absl::Status Errno(int err, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

absl::Status Walk(int dirfd, const std::string& path, std::set<std::pair<dev_t, ino_t>>& seen,
                  SnapshotUsage& usage) {
  UniqueFd fd(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno(errno, "open", path);
  DIR* dir = ::fdopendir(fd.Release());
  if (dir == nullptr) return Errno(errno, "fdopendir", path);
  absl::Status status;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
    struct stat st;
    if (::fstatat(::dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      status = Errno(errno, "stat", absl::StrCat(path, "/", ent->d_name));
      break;
    }
    if (seen.emplace(st.st_dev, st.st_ino).second) {
      usage.inodes++;
      usage.size += static_cast<int64_t>(st.st_blocks) * 512;
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd child(
          ::openat(::dirfd(dir), ent->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
      if (!child.valid()) {
        status = Errno(errno, "open", absl::StrCat(path, "/", ent->d_name));
        break;
      }
      status = Walk(child.get(), absl::StrCat(path, "/", ent->d_name), seen, usage);
      if (!status.ok()) break;
    }
  }
  ::closedir(dir);
  return status;
}

absl::Status RemoveAt(int parent_fd, const char* name, const std::string& path, dev_t root_dev) {
  struct stat st;
  if (::fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? absl::OkStatus() : Errno(errno, "stat", path);
  }
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != root_dev) {
      // A mount (e.g. a remote layer left behind by a crash): detach, never descend.
      if (::umount2(path.c_str(), MNT_DETACH) != 0) return Errno(errno, "umount", path);
      if (::fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return Errno(errno, "stat", path);
      }
    }
    UniqueFd fd(::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) return Errno(errno, "open", path);
    DIR* dir = ::fdopendir(fd.Release());
    if (dir == nullptr) return Errno(errno, "fdopendir", path);
    absl::Status status;
    while (struct dirent* ent = ::readdir(dir)) {
      if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
      status = RemoveAt(::dirfd(dir), ent->d_name, absl::StrCat(path, "/", ent->d_name), root_dev);
      if (!status.ok()) break;
    }
    ::closedir(dir);
    if (!status.ok()) return status;
    if (::unlinkat(parent_fd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return Errno(errno, "rmdir", path);
    }
    return absl::OkStatus();
  }
  if (::unlinkat(parent_fd, name, 0) != 0 && errno != ENOENT) return Errno(errno, "unlink", path);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SnapshotUsage> MeasureDiskUsage(const std::string& root) {
  struct stat st;
  if (::lstat(root.c_str(), &st) != 0) return Errno(errno, "stat", root);
  std::set<std::pair<dev_t, ino_t>> seen;
  SnapshotUsage usage;
  seen.emplace(st.st_dev, st.st_ino);
  usage.inodes = 1;
  usage.size = static_cast<int64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) return usage;
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno(errno, "open", root);
  if (absl::Status s = Walk(fd.get(), root, seen, usage); !s.ok()) return s;
  return usage;
}

absl::Status RemoveTree(const std::string& path) {
  struct stat st;
  size_t slash = path.rfind('/');
  std::string parent =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (::lstat(parent.c_str(), &st) != 0) {
    return errno == ENOENT ? absl::OkStatus() : Errno(errno, "stat", parent);
  }
  UniqueFd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent_fd.valid()) return Errno(errno, "open", parent);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  return RemoveAt(parent_fd.get(), name.c_str(), path, st.st_dev);
}

}  // namespace lazypull
