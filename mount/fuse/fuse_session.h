// FuseSession: one mounted libfuse3 low-level session served by a multi-threaded loop on a
// thread the session owns. Shared by the per-layer FUSE file systems and the EROFS backend's
// blob file system.
//
// Stop (or destruction): fuse_session_exit + a lazy unmount; if the loop does not end within
// `unmount_timeout` (the mount is still in use, e.g. as an overlay lowerdir or as an EROFS
// data device), the FUSE connection is aborted through fusectl so the loop threads end and
// nothing hangs; users of the detached mount then get ENOTCONN/EIO.
//
// Thread-safety: Stop is thread-safe and idempotent; the accessors are immutable after Start.
#ifndef LAZYPULL_MOUNT_FUSE_FUSE_SESSION_H_
#define LAZYPULL_MOUNT_FUSE_FUSE_SESSION_H_

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse3/fuse_lowlevel.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lazypull::mount {

struct FuseSessionOptions {
  std::string name;  // for logs (layer id, "blobs", ...)
  // "-o" options: ro, fsname=..., subtype=..., ...; default_permissions is always added.
  std::vector<std::string> mount_options;
  unsigned max_threads = 16;
  std::chrono::milliseconds unmount_timeout{2000};
  // Kernel readahead of the mount (bdi read_ahead_kb), in bytes; 0 keeps the default.
  unsigned readahead = 0;
};

class FuseSession {
 public:
  // Creates a session over `ops` with `userdata` (which must outlive the session), mounts it at
  // `target` and starts the loop. InvalidArgument if libfuse refuses the options;
  // FailedPrecondition if the mount fails (no /dev/fuse, not root, ...). Messages name `target`.
  static absl::StatusOr<std::unique_ptr<FuseSession>> Start(const fuse_lowlevel_ops& ops,
                                                            void* userdata,
                                                            const std::string& target,
                                                            const FuseSessionOptions& options);
  ~FuseSession();
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;

  // Ends the session and unmounts (see above). Errors name the target.
  absl::Status Stop();

  const std::string& target() const { return target_; }
  dev_t dev() const { return dev_; }  // st_dev of the mount
  bool running() const;

 private:
  FuseSession(std::string target, FuseSessionOptions options)
      : target_(std::move(target)), options_(std::move(options)) {}
  absl::Status Begin(const fuse_lowlevel_ops& ops, void* userdata);
  void SetReadahead();

  const std::string target_;
  const FuseSessionOptions options_;
  fuse_session* session_ = nullptr;
  dev_t dev_ = 0;
  std::thread loop_;

  std::mutex stop_mu_;     // serializes Stop
  mutable std::mutex mu_;  // guards loop_done_
  std::condition_variable cv_;
  bool loop_done_ = false;
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_FUSE_SESSION_H_
