// Disk usage of a directory tree, as containerd's continuity fs.DiskUsage computes it: every
// unique (dev, ino) counted once, size = sum of st_blocks * 512. Includes the root itself.
// Does not follow symlinks. Thread-safe (no shared state).
#ifndef LAZYPULL_SERVER_DISK_USAGE_H_
#define LAZYPULL_SERVER_DISK_USAGE_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/snapshot_info.h"

namespace lazypull {

// Errors: the errno of the first failing stat/open, with the path.
absl::StatusOr<SnapshotUsage> MeasureDiskUsage(const std::string& root);

// Removes `path` recursively without crossing into other mounts: a mount point found below it
// is lazily detached first. NotFound-tolerant (returns OK if `path` does not exist).
absl::Status RemoveTree(const std::string& path);

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_DISK_USAGE_H_
