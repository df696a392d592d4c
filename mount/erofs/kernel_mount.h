// KernelErofsMount: RAII owner of one kernel EROFS mount of a metadata image whose file data is
// on an extra device, a regular file: mount(2) type "erofs", MS_RDONLY, data "device=<data>".
// Two ways to attach the files (ErofsAttachment): file-backed (Linux 6.12+: the files
// themselves), or through two loop devices (Linux 5.16+: `/dev/loopM`, `device=/dev/loopN`,
// loop_device.h) that the mount handle owns and releases with the mount (unmounted, released
// or never made); the kernel keeps them while a detached mount lives on.
//
// Replacing a mount in place (graduation): MountBeneath() mounts a new image underneath the
// mount currently at the target (move_mount MOVE_MOUNT_BENEATH, Linux 6.5+) and then unmounts
// the old one (UnmountTop), so a path lookup at the target never sees an empty directory.
// Processes that still use the old mount (e.g. an overlay built on it) keep it until they let
// go.
//
// Thread-compatible: one owner.
#ifndef LAZYPULL_MOUNT_EROFS_KERNEL_MOUNT_H_
#define LAZYPULL_MOUNT_EROFS_KERNEL_MOUNT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mount/erofs/loop_device.h"

namespace lazypull::mount::erofs {

// How an image and its data device reach the kernel.
struct ErofsAttachment {
  // Through loop devices instead of file-backed mounts.
  bool loop = false;
  // Owner tag of the loop devices (LoopOwnerTag of the daemon's EROFS dir).
  std::string loop_owner = "default";
  // The loop devices' system calls (tests inject failures); null = the real ones.
  LoopSyscalls* loop_syscalls = nullptr;
};

class KernelErofsMount {
 public:
  // Mounts `image` (device 1 = `device`) at `target`, an existing directory. Errors name the
  // target and carry the kernel's errno (FailedPrecondition for EPERM/ENODEV/EOPNOTSUPP, i.e. no
  // EROFS here; InvalidArgument for a rejected image).
  // A loop device that cannot be attached fails the mount with its error (nothing is left).
  static absl::StatusOr<std::unique_ptr<KernelErofsMount>> Mount(
      const std::string& image, const std::string& device, const std::string& target,
      const ErofsAttachment& attach = {});

  // Mounts `image` + `device` beneath whatever is mounted at `target` and detaches that mount;
  // the returned handle owns the new mount. The caller's handle of the old mount (if any) must
  // be Released, not unmounted. When the old mount cannot be detached, the new one (already
  // beneath it, carrying it) is taken out again (the old one is moved aside and back), so the
  // path shows the old mount alone, as before, and the error is returned. Internal when that
  // is impossible too (a shared parent mount): the new mount stays beneath, unseen, and the
  // caller must not try again on that target (each try would stack one more).
  // InvalidArgument when the kernel has no MOVE_MOUNT_BENEATH (before 6.5).
  static absl::StatusOr<std::unique_ptr<KernelErofsMount>> MountBeneath(
      const std::string& image, const std::string& device, const std::string& target,
      const ErofsAttachment& attach = {});
  // The same with the call that takes the old mount away (default: UnmountTop; returns 0 or -1
  // with errno set). For tests that inject its failure.
  using DetachFn = std::function<int(const std::string& target)>;
  // Unmounts the mount on top at `target`: umount2(target, 0), retried for up to 200 ms while
  // it is busy (an overlay being mounted on it holds it until it has cloned it), then
  // umount2(MNT_DETACH). Returns 0 or -1 with errno set.
  static int UnmountTop(const std::string& target);
  static absl::StatusOr<std::unique_ptr<KernelErofsMount>> MountBeneath(
      const std::string& image, const std::string& device, const std::string& target,
      const ErofsAttachment& attach, const DetachFn& detach);

  // Adopts an existing mount at `target` (e.g. after a daemon restart) without mounting.
  static std::unique_ptr<KernelErofsMount> Adopt(const std::string& target);

  ~KernelErofsMount();
  KernelErofsMount(const KernelErofsMount&) = delete;
  KernelErofsMount& operator=(const KernelErofsMount&) = delete;

  const std::string& target() const { return target_; }
  bool mounted() const { return mounted_; }

  // Unmounts; a busy mount (an overlay still uses it) is detached lazily and lives until its
  // last user is gone. Then closes the loop devices (detached now, or with the detached mount).
  // Idempotent. Errors name the target.
  absl::Status Unmount();
  // Forgets the mount without unmounting it (it was replaced or detached by someone else) and
  // closes its loop devices (the kernel detaches them when that mount goes).
  void Release() {
    mounted_ = false;
    loops_.clear();
  }
  // The loop devices of the mount (empty when file-backed or adopted).
  std::vector<std::string> loop_devices() const;

 private:
  explicit KernelErofsMount(std::string target) : target_(std::move(target)) {}

  std::string target_;
  bool mounted_ = false;
  std::vector<std::unique_ptr<LoopDevice>> loops_;  // image, device
};

// Whether `path` is the root of a mount of type `fstype` ("erofs", "fuse.lazypull", ...).
bool IsMountOfType(const std::string& path, const std::string& fstype);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_KERNEL_MOUNT_H_
