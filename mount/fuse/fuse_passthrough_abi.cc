#include "mount/fuse/fuse_passthrough_abi.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "fmt/format.h"

namespace lazypull::mount {
namespace {

struct FuseBackingMap {  // struct fuse_backing_map
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned kFuseDevIocMagic = 229;
constexpr unsigned long kBackingOpen = _IOW(kFuseDevIocMagic, 1, FuseBackingMap);
constexpr unsigned long kBackingClose = _IOW(kFuseDevIocMagic, 2, uint32_t);

}  // namespace

absl::StatusOr<int32_t> FuseBackingOpen(int dev_fd, int fd) {
  FuseBackingMap map{};
  map.fd = fd;
  const int id = ::ioctl(dev_fd, kBackingOpen, &map);
  if (id > 0) return id;
  const int err = id < 0 ? errno : EINVAL;
  std::string msg = fmt::format("FUSE_DEV_IOC_BACKING_OPEN: {}", strerror(err));
  if (err == EPERM) return absl::PermissionDeniedError(msg);
  if (err == ELOOP) return absl::FailedPreconditionError(msg);
  return absl::InternalError(msg);
}

absl::Status FuseBackingClose(int dev_fd, int32_t id) {
  uint32_t v = static_cast<uint32_t>(id);
  if (::ioctl(dev_fd, kBackingClose, &v) != 0) {
    return absl::InternalError(
        fmt::format("FUSE_DEV_IOC_BACKING_CLOSE {}: {}", id, strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace lazypull::mount
