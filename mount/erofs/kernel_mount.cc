#include "mount/erofs/kernel_mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
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

// Takes out the mount that MOVE_MOUNT_BENEATH put under the mount at `target` (that one now
// sits on the new one's root), leaving the old one at `target` as before: the old mount is
// moved aside to a temp directory next to `target`, the uncovered new one detached, and the
// old one moved back. Paths inside `target` show the new mount's tree (the same layer)
// meanwhile, and briefly nothing. Fails (EINVAL) when `target`'s parent mount is shared: the
// kernel moves no mount out of a shared parent.
absl::Status UndoMountBeneath(const std::string& target) {
  const size_t slash = target.find_last_of('/');
  if (slash == std::string::npos) return absl::InvalidArgumentError("relative target " + target);
  std::string aside = target.substr(0, slash) + "/.undo-beneath-XXXXXX";
  if (::mkdtemp(aside.data()) == nullptr) return absl::ErrnoToStatus(errno, "mkdtemp " + aside);
  absl::Status result;
  if (::move_mount(AT_FDCWD, target.c_str(), AT_FDCWD, aside.c_str(), 0) != 0) {
    result = absl::ErrnoToStatus(errno, fmt::format("move the mount at {} aside", target));
  } else {
    if (::umount2(target.c_str(), MNT_DETACH) != 0) {
      result = absl::ErrnoToStatus(errno, "detach the new mount at " + target);
    }
    if (::move_mount(AT_FDCWD, aside.c_str(), AT_FDCWD, target.c_str(), 0) != 0) {
      result = absl::ErrnoToStatus(errno, fmt::format("move the mount back to {}", target));
    }
  }
  ::rmdir(aside.c_str());
  return result;
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
  return MountBeneath(image, device, target,
                      [](const std::string& t) { return ::umount2(t.c_str(), MNT_DETACH); });
}

absl::StatusOr<std::unique_ptr<KernelErofsMount>> KernelErofsMount::MountBeneath(
    const std::string& image, const std::string& device, const std::string& target,
    const DetachFn& detach) {
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
  if (detach(target) != 0) {
    const absl::Status err = MountError(errno, what + ": detaching the mount above");
    struct stat top, below;
    const bool old_gone = ::fstat(mnt.get(), &below) == 0 && ::stat(target.c_str(), &top) == 0 &&
                          top.st_dev == below.st_dev;
    if (!old_gone) {
      // Left there, the new mount would stay stacked beneath the old one (and every retry
      // would stack another). It cannot be detached alone: the old mount sits on its root.
      if (absl::Status undo = UndoMountBeneath(target); !undo.ok()) {
        LogError("a mount is left beneath another",
                 {{"target", target}, {"image", image}, {"error", undo.ToString()}});
        return absl::InternalError(fmt::format("{}; the new mount stays beneath it: {}",
                                               std::string(err.message()),
                                               std::string(undo.message())));
      }
      return err;
    }
    // Someone else detached the old mount meanwhile: the new one is in place.
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
