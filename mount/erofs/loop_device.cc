#include "mount/erofs/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/logging.h"
#include "fmt/format.h"
#include "lazypull/digest.h"

namespace lazypull::mount::erofs {
namespace {

constexpr char kControl[] = "/dev/loop-control";
constexpr long kFuseSuperMagic = 0x65735546;
constexpr int kLoopMajor = 7;
// Other processes (udisks, a second daemon, losetup) may take the device LOOP_CTL_GET_FREE
// named before our LOOP_CONFIGURE: a few retries, each with a fresh device.
constexpr int kAttachAttempts = 16;

std::string TagPrefix(const std::string& owner) { return "lazypull:" + owner + ":"; }

// The device node, created when /dev is not a devtmpfs that has it (a container's /dev).
int OpenDevice(LoopSyscalls& sys, int n, const std::string& path) {
  int fd = sys.Open(path, O_RDONLY);
  if (fd < 0 && errno == ENOENT) {
    if (::mknod(path.c_str(), S_IFBLK | 0600, makedev(kLoopMajor, n)) != 0 && errno != EEXIST) {
      errno = ENOENT;
      return -1;
    }
    fd = sys.Open(path, O_RDONLY);
  }
  return fd;
}

std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

int LoopSyscalls::Open(const std::string& path, int flags) {
  return ::open(path.c_str(), flags | O_CLOEXEC);
}

int LoopSyscalls::Ioctl(int fd, unsigned long request, void* arg) {
  return ::ioctl(fd, request, arg);
}

absl::StatusOr<std::unique_ptr<LoopDevice>> LoopDevice::Attach(const std::string& file,
                                                               const std::string& owner,
                                                               LoopSyscalls* sys) {
  LoopSyscalls real;
  LoopSyscalls& s = sys != nullptr ? *sys : real;
  UniqueFd backing(s.Open(file, O_RDONLY));
  if (!backing.valid()) {
    return absl::ErrnoToStatus(errno, fmt::format("loop device for {}: open the file", file));
  }
  struct statfs fs {};
  const bool on_fuse = ::fstatfs(backing.get(), &fs) == 0 && fs.f_type == kFuseSuperMagic;
  UniqueFd control(s.Open(kControl, O_RDWR));
  if (!control.valid()) {
    const int err = errno;
    std::string msg = fmt::format("loop device for {}: open {}: {}", file, kControl, strerror(err));
    if (err == ENOENT || err == EACCES || err == EPERM) {
      return absl::FailedPreconditionError(msg);
    }
    return absl::ErrnoToStatus(err, msg);
  }
  loop_config config;
  std::memset(&config, 0, sizeof(config));
  config.fd = static_cast<uint32_t>(backing.get());
  config.block_size = 512;  // what our 512-byte-block images need; 4 KiB ones work on it too
  config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
  const std::string base = std::filesystem::path(file).filename().string();
  std::snprintf(reinterpret_cast<char*>(config.info.lo_file_name), LO_NAME_SIZE, "%s%s",
                TagPrefix(owner).c_str(), base.c_str());
  for (int attempt = 0; attempt < kAttachAttempts; ++attempt) {
    const int n = s.Ioctl(control.get(), LOOP_CTL_GET_FREE, nullptr);
    if (n < 0) {
      return absl::ErrnoToStatus(errno, fmt::format("loop device for {}: LOOP_CTL_GET_FREE", file));
    }
    const std::string path = fmt::format("/dev/loop{}", n);
    UniqueFd dev(OpenDevice(s, n, path));
    if (!dev.valid()) {
      return absl::ErrnoToStatus(errno, fmt::format("loop device for {}: open {}", file, path));
    }
    bool dio = !on_fuse;
    config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    if (dio) config.info.lo_flags |= LO_FLAGS_DIRECT_IO;
    int r = s.Ioctl(dev.get(), LOOP_CONFIGURE, &config);
    if (r != 0 && errno == EINVAL && dio) {
      // The backing file system cannot do direct I/O at 512-byte granularity: buffered.
      dio = false;
      config.info.lo_flags &= ~LO_FLAGS_DIRECT_IO;
      r = s.Ioctl(dev.get(), LOOP_CONFIGURE, &config);
    }
    if (r == 0) {
      return std::unique_ptr<LoopDevice>(new LoopDevice(path, std::move(dev), dio));
    }
    if (errno != EBUSY) {
      return absl::ErrnoToStatus(errno,
                                 fmt::format("loop device for {}: LOOP_CONFIGURE {}", file, path));
    }
  }
  return absl::UnavailableError(
      fmt::format("loop device for {}: every free device was taken by someone else ({} attempts)",
                  file, kAttachAttempts));
}

std::string LoopOwnerTag(const std::string& state_dir) {
  return Digest::Of(state_dir).hex().substr(0, 16);
}

std::vector<LoopDeviceInfo> ListLoopDevices(LoopSyscalls* sys) {
  LoopSyscalls real;
  LoopSyscalls& s = sys != nullptr ? *sys : real;
  std::vector<LoopDeviceInfo> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/block", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("loop", 0) != 0) continue;
    const std::string backing = e.path().string() + "/loop/backing_file";
    if (!std::filesystem::exists(backing, ec)) continue;  // not bound
    LoopDeviceInfo info;
    info.path = "/dev/" + name;
    info.backing_file = ReadLine(backing);
    UniqueFd dev(s.Open(info.path, O_RDONLY));
    loop_info64 li;
    std::memset(&li, 0, sizeof(li));
    if (dev.valid() && s.Ioctl(dev.get(), LOOP_GET_STATUS64, &li) == 0) {
      info.file_name.assign(reinterpret_cast<const char*>(li.lo_file_name),
                            strnlen(reinterpret_cast<const char*>(li.lo_file_name), LO_NAME_SIZE));
    }
    out.push_back(std::move(info));
  }
  return out;
}

bool IsOwnedLoopDevice(const LoopDeviceInfo& info, const std::string& owner) {
  return info.file_name.rfind(TagPrefix(owner), 0) == 0;
}

size_t DetachStaleLoopDevices(const std::string& owner, LoopSyscalls* sys) {
  LoopSyscalls real;
  LoopSyscalls& s = sys != nullptr ? *sys : real;
  size_t found = 0;
  for (const LoopDeviceInfo& info : ListLoopDevices(&s)) {
    if (!IsOwnedLoopDevice(info, owner)) continue;
    ++found;
    UniqueFd dev(s.Open(info.path, O_RDONLY));
    if (!dev.valid() || s.Ioctl(dev.get(), LOOP_CLR_FD, nullptr) != 0) {
      LogWarn("cannot detach a loop device a previous daemon left",
              {{"device", info.path}, {"file", info.backing_file}, {"error", strerror(errno)}});
      continue;
    }
    // Detached at our close when unused; when a mount still holds it, once that mount goes.
    LogInfo("detaching a loop device a previous daemon left",
            {{"device", info.path}, {"file", info.backing_file}});
  }
  return found;
}

}  // namespace lazypull::mount::erofs
