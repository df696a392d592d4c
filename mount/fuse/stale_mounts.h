// Stale FUSE mounts: mount points whose FUSE daemon is gone (e.g. a lazypull killed with
// SIGKILL). Every access to them fails with ENOTCONN, and a new mount on top would hide the
// problem, so the daemon lazily detaches them at start and before mounting on a directory.
//
// Reads /proc/self/mountinfo. Thread-safe (no state).
#ifndef LAZYPULL_MOUNT_FUSE_STALE_MOUNTS_H_
#define LAZYPULL_MOUNT_FUSE_STALE_MOUNTS_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::mount {

// The file system type of lazypull's FUSE mounts in /proc/self/mountinfo.
inline constexpr char kLazypullFuseType[] = "fuse.lazypull";

struct MountPoint {
  std::string path;    // unescaped mount point
  std::string fstype;  // e.g. "fuse.lazypull"
  std::string source;  // unescaped mount source (an EROFS image path, /dev/loopN, ...)
};

// Mounts at or below `root` (an absolute path), deepest first. Errors if mountinfo cannot be
// read.
absl::StatusOr<std::vector<MountPoint>> MountsUnder(const std::string& root);

// Whether `path` is a FUSE mount whose connection is dead (statfs/stat fail with ENOTCONN).
bool IsStaleFuseMount(const std::string& path);

// Detaches (umount2 MNT_DETACH) every stale lazypull FUSE mount (type kLazypullFuseType) at or
// below `root`, deepest first, and returns their paths. Each detach is logged. The first
// umount2 failure is returned as an error naming the path (after trying all). Mounts in
// `skip` are not even probed (the FUSE holder keeps their connections for adoption: with no
// server yet, a probe would wait forever).
absl::StatusOr<std::vector<std::string>> DetachStaleFuseMounts(
    const std::string& root, const std::set<std::string>& skip = {});

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_STALE_MOUNTS_H_
