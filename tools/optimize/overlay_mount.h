// OverlayMount: an overlayfs mount this process made and owns; unmounted on destruction.
//
// The optimizer's container rootfs: the image's unpacked layers as lower directories and a
// scratch upper directory, so whatever the container writes never touches a layer.
//
// Thread-compatible: one owner thread.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_OVERLAY_MOUNT_H_
#define LAZYPULL_TOOLS_OPTIMIZE_OVERLAY_MOUNT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::optimize {

class OverlayMount {
 public:
  // Mounts overlay at `target` (an existing directory) with `lowerdirs` (TOPMOST first, at
  // least one), `upperdir` and `workdir` (empty directories on one filesystem). Errors:
  // InvalidArgument for no lower directory, a path holding ':' or ',' or an option string
  // longer than a page; Internal with the mount(2) error otherwise.
  static absl::StatusOr<std::unique_ptr<OverlayMount>> Mount(
      const std::vector<std::string>& lowerdirs, const std::string& upperdir,
      const std::string& workdir, const std::string& target);

  OverlayMount(const OverlayMount&) = delete;
  OverlayMount& operator=(const OverlayMount&) = delete;
  // Unmounts (detaching if busy); errors are logged.
  ~OverlayMount();

  const std::string& path() const { return target_; }

  // Unmounts now. Internal if umount2 fails; the destructor then detaches it.
  absl::Status Unmount();

 private:
  explicit OverlayMount(std::string target) : target_(std::move(target)) {}

  std::string target_;
  bool mounted_ = true;
};

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_OVERLAY_MOUNT_H_
