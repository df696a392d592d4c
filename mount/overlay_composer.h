// Mount specs for snapshots, composed exactly as containerd's overlayfs snapshotter does
// (snapshots/overlay/overlay.go, containerd 1.6):
//   - no parents: bind of <snapshots>/<id>/fs, options {rw|ro, rbind};
//   - active with parents: overlay, options [index=off,] workdir=, upperdir=, lowerdir=
//     (nearest parent first);
//   - view of one parent: bind of the parent's fs, {ro, rbind};
//   - view of several parents: overlay with [index=off,] lowerdir= only.
// Long lowerdir options (128 layers) are left to the mounting side, which shortens them the
// way containerd's mount.All does (see CompactLowerdirOption).
#ifndef LAZYPULL_MOUNT_OVERLAY_COMPOSER_H_
#define LAZYPULL_MOUNT_OVERLAY_COMPOSER_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace lazypull {

// One mount(2) call, as containerd.types.Mount carries it.
struct MountSpec {
  std::string type;
  std::string source;
  std::string target;
  std::vector<std::string> options;

  friend bool operator==(const MountSpec&, const MountSpec&) = default;
};

enum class SnapshotMountMode { kActive, kView };

// Directory layout of one snapshot: <snapshots_dir>/<id>/{fs,work}.
std::string SnapshotDir(absl::string_view snapshots_dir, int64_t id);
std::string SnapshotFsDir(absl::string_view snapshots_dir, int64_t id);
std::string SnapshotWorkDir(absl::string_view snapshots_dir, int64_t id);

// Returns the mounts for snapshot `id` whose parent chain is `parent_ids` (nearest first).
// `overlay_index_off` adds "index=off" (set it when /sys/module/overlay/parameters/index
// exists, as containerd does). Pure function; thread-safe.
std::vector<MountSpec> ComposeSnapshotMounts(absl::string_view snapshots_dir, int64_t id,
                                             SnapshotMountMode mode,
                                             std::span<const int64_t> parent_ids,
                                             bool overlay_index_off);

// True when the kernel's overlay module exposes the "index" parameter.
bool KernelOverlaySupportsIndex();

// containerd's compactLowerdirOption: when an overlay's options do not fit in a page, mounts
// chdir into the common parent of all lowerdirs and pass them relative. Returns the directory
// to chdir into ("" when nothing can be compacted) and rewrites `options` in place (lowerdir
// moved to the end, relative). Pure function.
std::string CompactLowerdirOption(std::vector<std::string>& options);

}  // namespace lazypull

#endif  // LAZYPULL_MOUNT_OVERLAY_COMPOSER_H_
