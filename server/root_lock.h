// RootLock: exclusive ownership of a snapshotter root, via flock(2) on <root>/lazypull.lock.
// The lock dies with the process (also on kill -9), so a stale file never blocks a restart.
//
// MakePrivateRoot: the root holds private image data (chunks, layer blobs, metadata), so it is
// mode 0700 whoever created it (kubelet's hostPath DirectoryOrCreate makes it 0755).
#ifndef LAZYPULL_SERVER_ROOT_LOCK_H_
#define LAZYPULL_SERVER_ROOT_LOCK_H_

#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull {

// Creates `root` (and missing parents, 0755 as mkdir -p) and sets its mode to exactly 0700,
// also when it already existed with another mode (logged). Errors: a non-directory at `root`
// (FailedPrecondition), mkdir/chmod errors with their errno, naming the path.
absl::Status MakePrivateRoot(const std::string& root);

class RootLock {
 public:
  // Takes the lock without waiting and records our pid in the file. FailedPrecondition, naming
  // the lock file and the holder's pid, when another process holds it.
  static absl::StatusOr<RootLock> Acquire(const std::string& root);

  RootLock(RootLock&&) = default;
  RootLock& operator=(RootLock&&) = default;
  const std::string& path() const { return path_; }

 private:
  RootLock(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_ROOT_LOCK_H_
