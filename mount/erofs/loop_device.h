// LoopDevice: RAII owner of one loop device bound read-only to a file, so EROFS mounts images on
// kernels without file-backed mounts (before 6.12): the metadata image and the data device each
// go through a loop device (`mount -t erofs /dev/loopM -o device=/dev/loopN`).
//
// Attach: LOOP_CTL_GET_FREE on /dev/loop-control, then one LOOP_CONFIGURE (file, flags, block
// size) with LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR, plus LO_FLAGS_DIRECT_IO for a file on a
// local file system (EROFS caches the pages it reads; a second page cache of the backing file
// would only double memory). Files on FUSE (our blob files, served with direct_io by the daemon
// itself) get buffered I/O. The kernel detaches an autoclear device at the last close of the
// device: the mount that holds it, or this handle when nothing mounted it. So a loop device
// lives exactly as long as its mount, also when the daemon dies (kill -9 closes this handle's
// fd; the mount holds the device until it is unmounted). "Its mount" includes every copy: a
// mount namespace created while the mount exists (unshare(CLONE_NEWNS), `ip netns exec`, a
// container runtime) holds a private copy on a host whose mounts are private, which the
// daemon's unmount does not reach, so the device stays bound until that namespace unmounts
// the copy or exits (checked on kernel 6.18; the "loop devices outlived their mounts" seen in
// handover tests on a shared machine: another process's `ip netns exec` had started then).
//
// Ownership: lo_file_name is "lazypull:<owner>:<file base name>" (64 bytes at most), where
// <owner> (LoopOwnerTag) names the state directory of the daemon that attached it, so
// DetachStaleLoopDevices finds a crashed daemon's devices even when the backing path is no
// longer reachable (a blob file of a lazily detached FUSE mount).
//
// Thread-safety: a LoopDevice is thread-compatible (one owner); the functions are thread-safe.
#ifndef LAZYPULL_MOUNT_EROFS_LOOP_DEVICE_H_
#define LAZYPULL_MOUNT_EROFS_LOOP_DEVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull::mount::erofs {

// The system calls a LoopDevice makes. The base class makes the real calls; tests override one
// to inject a failure. Each returns what the system call returns (-1 with errno set).
class LoopSyscalls {
 public:
  virtual ~LoopSyscalls() = default;
  virtual int Open(const std::string& path, int flags);
  virtual int Ioctl(int fd, unsigned long request, void* arg);
};

class LoopDevice {
 public:
  // Binds a free loop device to `file` (read-only, autoclear, see above), tagged with `owner`
  // (LoopOwnerTag). Another process taking the same free device meanwhile is retried. Errors name
  // the file and the step (FailedPrecondition when there is no /dev/loop-control or the
  // caller may not use it). `sys` null = the real system calls.
  static absl::StatusOr<std::unique_ptr<LoopDevice>> Attach(const std::string& file,
                                                            const std::string& owner,
                                                            LoopSyscalls* sys = nullptr);

  // Closes the handle: the device is detached now if nothing mounted it, else when its mount
  // goes.
  ~LoopDevice() = default;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  // "/dev/loopN".
  const std::string& path() const { return path_; }
  bool direct_io() const { return direct_io_; }

 private:
  LoopDevice(std::string path, UniqueFd fd, bool direct_io)
      : path_(std::move(path)), fd_(std::move(fd)), direct_io_(direct_io) {}

  std::string path_;
  UniqueFd fd_;
  bool direct_io_ = false;
};

// A short tag naming `state_dir` (16 hex digits of its sha256).
std::string LoopOwnerTag(const std::string& state_dir);

// A bound loop device as the kernel shows it.
struct LoopDeviceInfo {
  std::string path;          // /dev/loopN
  std::string backing_file;  // /sys/block/loopN/loop/backing_file
  std::string file_name;     // lo_file_name ("" when the device could not be opened)
};
// Every bound loop device (those with /sys/block/loop*/loop/backing_file).
std::vector<LoopDeviceInfo> ListLoopDevices(LoopSyscalls* sys = nullptr);
// Whether `info` was attached with owner tag `owner`.
bool IsOwnedLoopDevice(const LoopDeviceInfo& info, const std::string& owner);

// Detaches (LOOP_CLR_FD) the loop devices tagged `owner` that a previous daemon left: an
// unused one at once, one a surviving mount still holds when that mount goes (the kernel turns
// LOOP_CLR_FD on a busy device into autoclear). Returns how many it found. Call before this
// process attaches any device with the same tag.
size_t DetachStaleLoopDevices(const std::string& owner, LoopSyscalls* sys = nullptr);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_LOOP_DEVICE_H_
