// KernelErofsMount: RAII owner of one kernel EROFS mount of a metadata image whose file data is
// on an extra device (a regular file; file-backed mode, no loop device): mount(2) type "erofs",
// MS_RDONLY, data "device=<data file>".
//
// Replacing a mount in place (graduation): MountBeneath() mounts a new image underneath the
// mount currently at the target (move_mount MOVE_MOUNT_BENEATH, Linux 6.5+) and then detaches
// the old one, so a path lookup at the target never sees an empty directory. Processes that
// still use the old mount (e.g. an overlay built on it) keep it until they let go.
//
// Thread-compatible: one owner.
#ifndef LAZYPULL_MOUNT_EROFS_KERNEL_MOUNT_H_
#define LAZYPULL_MOUNT_EROFS_KERNEL_MOUNT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lazypull::mount::erofs {

class KernelErofsMount {
 public:
  // Mounts `image` (device 1 = `device`) at `target`, an existing directory. Errors name the
  // target and carry the kernel's errno (FailedPrecondition for EPERM/ENODEV/EOPNOTSUPP, i.e. no
  // EROFS here; InvalidArgument for a rejected image).
  static absl::StatusOr<std::unique_ptr<KernelErofsMount>> Mount(const std::string& image,
                                                                 const std::string& device,
                                                                 const std::string& target);

  // Mounts `image` + `device` beneath whatever is mounted at `target` and detaches that mount;
  // the returned handle owns the new mount. The caller's handle of the old mount (if any) must
  // be Released, not unmounted. When the old mount cannot be detached, the new one (already
  // beneath it, carrying it) is taken out again (the old one is moved aside and back), so the
  // path shows the old mount alone, as before, and the error is returned. Internal when that
  // is impossible too (a shared parent mount): the new mount stays beneath, unseen, and the
  // caller must not try again on that target (each try would stack one more).
  static absl::StatusOr<std::unique_ptr<KernelErofsMount>> MountBeneath(const std::string& image,
                                                                        const std::string& device,
                                                                        const std::string& target);
  // The same with the call that detaches the old mount replaced (default: umount2(target,
  // MNT_DETACH); returns 0 or -1 with errno set). For tests that inject its failure.
  using DetachFn = std::function<int(const std::string& target)>;
  static absl::StatusOr<std::unique_ptr<KernelErofsMount>> MountBeneath(const std::string& image,
                                                                        const std::string& device,
                                                                        const std::string& target,
                                                                        const DetachFn& detach);

  // Adopts an existing mount at `target` (e.g. after a daemon restart) without mounting.
  static std::unique_ptr<KernelErofsMount> Adopt(const std::string& target);

  ~KernelErofsMount();
  KernelErofsMount(const KernelErofsMount&) = delete;
  KernelErofsMount& operator=(const KernelErofsMount&) = delete;

  const std::string& target() const { return target_; }
  bool mounted() const { return mounted_; }

  // Unmounts; a busy mount (an overlay still uses it) is detached lazily and lives until its
  // last user is gone. Idempotent. Errors name the target.
  absl::Status Unmount();
  // Forgets the mount without unmounting it (it was replaced or detached by someone else).
  void Release() { mounted_ = false; }

 private:
  explicit KernelErofsMount(std::string target) : target_(std::move(target)) {}

  std::string target_;
  bool mounted_ = false;
};

// Whether `path` is the root of a mount of type `fstype` ("erofs", "fuse.lazypull", ...).
bool IsMountOfType(const std::string& path, const std::string& fstype);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_KERNEL_MOUNT_H_
