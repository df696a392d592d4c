#include "server/root_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"

namespace lazypull {

absl::Status MakePrivateRoot(const std::string& root) {
  if (root.empty()) return absl::InvalidArgumentError("root directory path is empty");
  for (size_t pos = 1; pos <= root.size(); ++pos) {
    if (pos != root.size() && root[pos] != '/') continue;
    const std::string prefix = root.substr(0, pos);
    const mode_t mode = pos == root.size() ? 0700 : 0755;
    if (::mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("mkdir ", prefix));
    }
  }
  struct stat st;
  if (::stat(root.c_str(), &st) != 0)
    return absl::ErrnoToStatus(errno, absl::StrCat("stat ", root));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("root ", root, " is not a directory"));
  }
  const mode_t old_mode = st.st_mode & 07777;
  if (old_mode == 0700) return absl::OkStatus();
  // Exact mode whatever the umask or whoever made it: other users must not even traverse it.
  if (::chmod(root.c_str(), 0700) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("chmod 0700 ", root));
  }
  char old_text[8];
  std::snprintf(old_text, sizeof(old_text), "%04o", static_cast<unsigned>(old_mode));
  LogWarn("root directory was accessible to other users; mode set to 0700",
          {{"root", root}, {"old_mode", std::string(old_text)}});
  return absl::OkStatus();
}

absl::StatusOr<RootLock> RootLock::Acquire(const std::string& root) {
  std::string path = root + "/lazypull.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open lock file ", path));
  ::fchmod(fd.get(), 0600);  // a file left by an older version may be wider
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err != EWOULDBLOCK) return absl::ErrnoToStatus(err, absl::StrCat("flock ", path));
    char buf[32] = {};
    ssize_t n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(absl::StripAsciiWhitespace(std::string(buf, n)))
                               : std::string("unknown");
    return absl::FailedPreconditionError(absl::StrCat("another lazypull-snapshotter (pid ", holder,
                                                      ") is already running on root ", root,
                                                      " (lock file ", path, " is held)"));
  }
  std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("write lock file ", path));
  }
  return RootLock(std::move(fd), std::move(path));
}

}  // namespace lazypull
