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

// What the kernel is given for an image and its data device: the files themselves, or the loop
// devices attached to them (owned here until the mount handle takes them).
struct Sources {
  std::string source, device;
  std::vector<std::unique_ptr<LoopDevice>> loops;
};

absl::StatusOr<Sources> Attach(const std::string& image, const std::string& device,
                               const ErofsAttachment& attach) {
  if (absl::Status s = CheckOptionPath(device); !s.ok()) return s;
  Sources out;
  if (!attach.loop) {
    out.source = image;
    out.device = device;
    return out;
  }
  for (const std::string* file : {&image, &device}) {
    absl::StatusOr<std::unique_ptr<LoopDevice>> loop =
        LoopDevice::Attach(*file, attach.loop_owner, attach.loop_syscalls);
    if (!loop.ok()) return loop.status();  // the ones attached so far are closed: detached
    out.loops.push_back(std::move(*loop));
  }
  out.source = out.loops[0]->path();
  out.device = out.loops[1]->path();
  return out;
}

std::string Describe(const std::string& image, const std::string& device, const Sources& src) {
  if (src.loops.empty()) return fmt::format("{} (device={})", image, device);
  return fmt::format("{} via {} (device={} via {})", image, src.source, device, src.device);
}

}  // namespace

absl::StatusOr<std::unique_ptr<KernelErofsMount>> KernelErofsMount::Mount(
    const std::string& image, const std::string& device, const std::string& target,
    const ErofsAttachment& attach) {
  absl::StatusOr<Sources> src = Attach(image, device, attach);
  if (!src.ok()) {
    return absl::Status(src.status().code(),
                        fmt::format("mount -t erofs {} on {}: {}", image, target,
                                    std::string(src.status().message())));
  }
  const std::string data = "device=" + src->device;
  if (::mount(src->source.c_str(), target.c_str(), "erofs", MS_RDONLY, data.c_str()) != 0) {
    return MountError(
        errno, fmt::format("mount -t erofs {} on {}", Describe(image, device, *src), target));
  }
  std::unique_ptr<KernelErofsMount> m(new KernelErofsMount(target));
  m->mounted_ = true;
  m->loops_ = std::move(src->loops);
  return m;
}

absl::StatusOr<std::unique_ptr<KernelErofsMount>> KernelErofsMount::MountBeneath(
    const std::string& image, const std::string& device, const std::string& target,
    const ErofsAttachment& attach) {
  return MountBeneath(image, device, target, attach, UnmountTop);
}

int KernelErofsMount::UnmountTop(const std::string& target) {
  // A plain umount, not MNT_DETACH: a container's overlay being mounted at this moment holds
  // the old mount between its lowerdir lookup and clone_private_mount(), and cloning a
  // detached mount fails (EINVAL, "overlayfs: failed to clone lowerpath"). A plain umount
  // fails with EBUSY while that reference exists instead, so it is retried; only a mount held
  // for longer (a reader inside it, not through an overlay) is finally detached.
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (::umount2(target.c_str(), 0) == 0) return 0;
    if (errno != EBUSY) return -1;
    ::usleep(2000);
  }
  return ::umount2(target.c_str(), MNT_DETACH);
}

absl::StatusOr<std::unique_ptr<KernelErofsMount>> KernelErofsMount::MountBeneath(
    const std::string& image, const std::string& device, const std::string& target,
    const ErofsAttachment& attach, const DetachFn& detach) {
  absl::StatusOr<Sources> src = Attach(image, device, attach);
  if (!src.ok()) {
    return absl::Status(src.status().code(),
                        fmt::format("mount -t erofs {} beneath {}: {}", image, target,
                                    std::string(src.status().message())));
  }
  const std::string what =
      fmt::format("mount -t erofs {} beneath {}", Describe(image, device, *src), target);
  UniqueFd fs(::fsopen("erofs", FSOPEN_CLOEXEC));
  if (!fs.valid()) return MountError(errno, what + ": fsopen");
  auto set = [&](const char* key, const std::string& value) -> absl::Status {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0) != 0) {
      return MountError(errno, fmt::format("{}: fsconfig {}", what, key));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = set("source", src->source); !s.ok()) return s;
  if (absl::Status s = set("device", src->device); !s.ok()) return s;
  // A read-only superblock: loop devices are attached read-only, and a block device is opened
  // for writing unless the superblock is.
  if (::fsconfig(fs.get(), FSCONFIG_SET_FLAG, "ro", nullptr, 0) != 0) {
    return MountError(errno, what + ": fsconfig ro");
  }
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
  m->loops_ = std::move(src->loops);
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
  loops_.clear();
  return absl::OkStatus();
}

std::vector<std::string> KernelErofsMount::loop_devices() const {
  std::vector<std::string> out;
  for (const auto& l : loops_) out.push_back(l->path());
  return out;
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
