// FuseSession: one mounted libfuse3 low-level session served by a multi-threaded loop on a
// thread the session owns. Shared by the per-layer FUSE file systems and the EROFS backend's
// blob file system.
//
// Stop (or destruction): fuse_session_exit + a lazy unmount; if the loop does not end within
// `unmount_timeout` (the mount is still in use, e.g. as an overlay lowerdir or as an EROFS
// data device), the FUSE connection is aborted through fusectl so the loop threads end and
// nothing hangs; users of the detached mount then get ENOTCONN/EIO.
//
// Handover (issue 20): with a FUSE holder (FuseSessionOptions::holder) a fresh mount hands a
// dup of its /dev/fuse fd and the kernel's INIT request to the holder, and a session can be
// started on a connection the holder kept (FuseSessionOptions::adopt) instead of mounting:
// see fuse_channel.h. Stop unmounts and makes the holder forget the mount; Detach instead
// leaves the mount to the holder for a successor.
//
// Thread-safety: Stop and Detach are thread-safe and idempotent; the accessors are immutable
// after Start.
#ifndef LAZYPULL_MOUNT_FUSE_FUSE_SESSION_H_
#define LAZYPULL_MOUNT_FUSE_FUSE_SESSION_H_

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse3/fuse_lowlevel.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mount/fuse/fuse_channel.h"
#include "mount/fuse/holder_client.h"

namespace lazypull::mount {

struct FuseSessionOptions {
  std::string name;  // for logs (layer id, "blobs", ...)
  // "-o" options: ro, fsname=..., subtype=..., ...; default_permissions is always added.
  std::vector<std::string> mount_options;
  unsigned max_threads = 16;
  std::chrono::milliseconds unmount_timeout{2000};
  // Kernel readahead of the mount (bdi read_ahead_kb), in bytes; 0 keeps the default.
  unsigned readahead = 0;
  // The FUSE holder, or null (no handover). Must outlive the session. The key of the mount
  // there is its target.
  FuseHolderClient* holder = nullptr;
  // Serve this connection (kept by the holder for `target`) instead of mounting. The previous
  // server must be dead (FUSE_NOTIFY_RESEND is sent when the kernel supports it).
  std::optional<HeldConnection> adopt;
  // See FuseChannelOptions::on_resent.
  std::function<void(uint64_t nodeid)> on_resent;
  // Accept FUSE passthrough at INIT when the kernel offers it (FuseChannelOptions).
  bool passthrough = false;
};

class FuseSession {
 public:
  // Creates a session over `ops` with `userdata` (which must outlive the session), mounts it at
  // `target` (or adopts options.adopt) and starts the loop. InvalidArgument if libfuse refuses the
  // options; FailedPrecondition if the mount fails (no /dev/fuse, not root, ...). Messages name
  // `target`.
  static absl::StatusOr<std::unique_ptr<FuseSession>> Start(const fuse_lowlevel_ops& ops,
                                                            FuseSessionUserdata* userdata,
                                                            const std::string& target,
                                                            FuseSessionOptions options);
  ~FuseSession();
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;

  // Ends the session and unmounts (see above); the holder forgets the mount. Errors name the
  // target.
  absl::Status Stop();
  // Graceful handover: stops reading requests, waits up to unmount_timeout for the ones
  // handed out to be answered, ends the loop and leaves the mount (and the connection, in the
  // holder) to a successor. Falls back to Stop() without a holder. Errors name the target.
  absl::Status Detach();

  const std::string& target() const { return target_; }
  dev_t dev() const { return dev_; }  // st_dev of the mount
  bool running() const;
  // Whether this session took over a connection from the holder.
  bool adopted() const { return adopted_; }
  // Requests the kernel sent again after FUSE_NOTIFY_RESEND (a counter that outlives the
  // session).
  std::shared_ptr<const std::atomic<uint64_t>> resent_requests() const { return resent_; }

 private:
  FuseSession(std::string target, FuseSessionOptions options)
      : target_(std::move(target)), options_(std::move(options)) {
    adopt_ = std::move(options_.adopt);
    options_.adopt.reset();
  }
  absl::Status Begin(const fuse_lowlevel_ops& ops, FuseSessionUserdata* userdata);
  void SetReadahead();
  // Gives the holder a dup of the fresh mount's fd and its INIT request (logged on failure).
  void RegisterWithHolder();
  // Waits for the loop to end (aborting the connection after unmount_timeout when `abort`),
  // then joins and destroys the session. Caller holds stop_mu_.
  absl::Status EndLoopLocked(bool abort);

  const std::string target_;
  FuseSessionOptions options_;  // immutable after construction (adopt moved out)
  std::optional<HeldConnection> adopt_;
  fuse_session* session_ = nullptr;
  std::unique_ptr<FuseChannel> channel_;
  std::shared_ptr<const std::atomic<uint64_t>> resent_;  // the channel's counter
  bool adopted_ = false;
  dev_t dev_ = 0;
  std::thread loop_;

  std::mutex stop_mu_;     // serializes Stop
  mutable std::mutex mu_;  // guards loop_done_
  std::condition_variable cv_;
  bool loop_done_ = false;
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_FUSE_SESSION_H_
