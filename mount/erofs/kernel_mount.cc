#include "mount/erofs/kernel_mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/logging.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "mount/fuse/stale_mounts.h"

#ifndef MOVE_MOUNT_BENEATH
#define MOVE_MOUNT_BENEATH 0x00000200
#endif

namespace lazypull::mount::erofs {
namespace {

absl::Status MountError(int err, const std::string& what) {
  std::string msg = fmt::format("{}: {}", what, strerror(err));
  switch (err) {
    case ENODEV:
    case EPERM:
    case EOPNOTSUPP:
    case ENOSYS:
      return absl::FailedPreconditionError(msg);
    case EINVAL:
    case EUCLEAN:  // the kernel's EFSCORRUPTED
      return absl::InvalidArgumentError(msg);
    default:
      return absl::ErrnoToStatus(err, msg);
  }
}

absl::Status CheckOptionPath(const std::string& path) {
  // The mount data string is comma-separated.
  if (path.find(',') != std::string::npos || path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        fmt::format("EROFS device path \"{}\" must be absolute and contain no comma", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KernelErofsMount>> KernelErofsMount::Mount(
    const std::string& image, const std::string& device, const std::string& target) {
  if (absl::Status s = CheckOptionPath(device); !s.ok()) return s;
  const std::string data = "device=" + device;
  if (::mount(image.c_str(), target.c_str(), "erofs", MS_RDONLY, data.c_str()) != 0) {
    return MountError(errno,
                      fmt::format("mount -t erofs {} on {} (device={})", image, target, device));
  }
  std::unique_ptr<KernelErofsMount> m(new KernelErofsMount(target));
  m->mounted_ = true;
  return m;
}

absl::StatusOr<std::unique_ptr<KernelErofsMount>> KernelErofsMount::MountBeneath(
    const std::string& image, const std::string& device, const std::string& target) {
  if (absl::Status s = CheckOptionPath(device); !s.ok()) return s;
  const std::string what =
      fmt::format("mount -t erofs {} beneath {} (device={})", image, target, device);
  UniqueFd fs(::fsopen("erofs", FSOPEN_CLOEXEC));
  if (!fs.valid()) return MountError(errno, what + ": fsopen");
  auto set = [&](const char* key, const std::string& value) -> absl::Status {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0) != 0) {
      return MountError(errno, fmt::format("{}: fsconfig {}", what, key));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = set("source", image); !s.ok()) return s;
  if (absl::Status s = set("device", device); !s.ok()) return s;
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    return MountError(errno, what + ": create");
  }
  UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY));
  if (!mnt.valid()) return MountError(errno, what + ": fsmount");
  if (::move_mount(mnt.get(), "", AT_FDCWD, target.c_str(),
                   MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH) != 0) {
    return MountError(errno, what + ": move_mount beneath");
  }
  // The old mount is on top now; detaching it uncovers the new one.
  if (::umount2(target.c_str(), MNT_DETACH) != 0) {
    return MountError(errno, what + ": detaching the mount above");
  }
  std::unique_ptr<KernelErofsMount> m(new KernelErofsMount(target));
  m->mounted_ = true;
  return m;
}

std::unique_ptr<KernelErofsMount> KernelErofsMount::Adopt(const std::string& target) {
  std::unique_ptr<KernelErofsMount> m(new KernelErofsMount(target));
  m->mounted_ = true;
  return m;
}

KernelErofsMount::~KernelErofsMount() {
  if (absl::Status s = Unmount(); !s.ok()) {
    LogWarn("cannot unmount an EROFS mount", {{"target", target_}, {"error", s.ToString()}});
  }
}

absl::Status KernelErofsMount::Unmount() {
  if (!mounted_) return absl::OkStatus();
  if (::umount2(target_.c_str(), 0) != 0) {
    if (errno != EBUSY || ::umount2(target_.c_str(), MNT_DETACH) != 0) {
      return absl::ErrnoToStatus(errno, fmt::format("umount {}", target_));
    }
  }
  mounted_ = false;
  return absl::OkStatus();
}

bool IsMountOfType(const std::string& path, const std::string& fstype) {
  absl::StatusOr<std::vector<MountPoint>> mounts = MountsUnder(path);
  if (!mounts.ok()) return false;
  // Stacked mounts on one path are listed oldest first: the last one is visible.
  const MountPoint* top = nullptr;
  for (const MountPoint& m : *mounts) {
    if (m.path == path) top = &m;
  }
  return top != nullptr && top->fstype == fstype;
}

}  // namespace lazypull::mount::erofs
