// Where FUSE layer mounts keep their passthrough state (PassthroughFiles: the handover ledger
// and assembled copies), one directory per mount target under the daemon's passthrough root,
// and the sweep of the directories no live mount owns.
#ifndef LAZYPULL_MOUNT_FUSE_PASSTHROUGH_DIRS_H_
#define LAZYPULL_MOUNT_FUSE_PASSTHROUGH_DIRS_H_

#include <cstddef>
#include <set>
#include <string>

namespace lazypull::mount {

// <root>/<16 hex digits of a hash of `target`>: per connection, as the FUSE holder keys it,
// and stable across processes (a successor finds its predecessor's state).
std::string PassthroughStateDir(const std::string& root, const std::string& target);

// Deletes every directory under `root` that is not the state dir of one of `live_targets`
// (the mount targets the FUSE holder keeps for adoption): what mounts of a crashed daemon
// left behind, copies included. Call at daemon start, before any mount. Returns how many it
// deleted; a missing root is none. Errors are logged, not returned (best effort).
size_t SweepPassthroughDirs(const std::string& root, const std::set<std::string>& live_targets);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_PASSTHROUGH_DIRS_H_
