// FuseChannel: the custom io (fuse_session_custom_io) between libfuse and one /dev/fuse
// connection, which makes a connection survive its server: a FUSE connection lives as long as
// any process holds an fd of it (the FUSE holder does, holder_client.h), so a new daemon can
// take it over instead of remounting (issue 20).
//
// What it adds to plain read/writev:
//   - Fresh mount: keeps a copy of the kernel's INIT request (for the holder).
//   - Adopted connection: the kernel sends INIT only once, to the first server, and libfuse
//     answers everything with EIO until it has seen one; so the first read returns a replay of
//     the saved INIT under a private `unique` whose reply is dropped. Then, if the kernel
//     announced FUSE_HAS_RESEND and the caller says the previous server is certainly dead,
//     FUSE_NOTIFY_RESEND makes the kernel queue again every request the dead server had read
//     but not answered (their `unique` has bit 63 set; libfuse echoes it in the reply).
//     No other request is handed out before the replayed INIT has been answered.
//   - Graceful handover: Quiesce() stops handing out requests and waits until every request
//     handed out has been answered; Close() then ends the session loop (reads fail with
//     ENODEV) without unmounting, so a successor adopts a connection with nothing pending.
//   - FUSE passthrough (fuse_passthrough_abi.h): when asked for and offered by the kernel, the
//     answer to a fresh mount's INIT accepts it (libfuse 3.14 cannot), and an OPEN answer
//     written by a thread that called ReplyNextOpenWithBacking carries FOPEN_PASSTHROUGH and
//     the backing id. The saved INIT request keeps the kernel's FUSE_PASSTHROUGH bit only when
//     passthrough was negotiated, so a successor knows it from the replay.
//   - Test hook: with $LAZYPULL_TEST_CRASH_AFTER_FUSE_READS=N the process SIGKILLs itself
//     right after reading its N-th FUSE_READ or FUSE_OPEN request of a channel, before
//     answering it (OPEN: with passthrough, reads of local files never reach the daemon).
//
// The fd is made O_NONBLOCK (reads wait in poll(2) with a wake-up eventfd). It is not owned:
// libfuse closes it (fuse_session_destroy). Thread-safe: libfuse's worker threads call Read
// and Writev concurrently.
#ifndef LAZYPULL_MOUNT_FUSE_FUSE_CHANNEL_H_
#define LAZYPULL_MOUNT_FUSE_FUSE_CHANNEL_H_

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse3/fuse_lowlevel.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "base/unique_fd.h"

namespace lazypull::mount {

class FuseChannel;

// Every userdata given to FuseSession derives from this: libfuse hands the session's userdata
// to the custom io callbacks too, which find their channel here. Set by FuseSession.
struct FuseSessionUserdata {
  FuseChannel* channel = nullptr;
};

// Kernel ABI bits newer than Debian's linux/fuse.h (kernel ≥ 6.9).
inline constexpr uint64_t kFuseHasResend = 1ull << 39;  // INIT flags (flags2 bit 7)
inline constexpr int32_t kFuseNotifyResend = 7;         // notification code
inline constexpr uint64_t kFuseUniqueResend = 1ull << 63;

struct FuseChannelOptions {
  std::string name;  // for logs
  // Non-empty: an adopted connection; this is the INIT request the kernel sent its first
  // server. Empty: a fresh mount (the INIT request is captured).
  std::string replay_init;
  // Send FUSE_NOTIFY_RESEND after the replay when the kernel supports it. Only when the
  // previous server of the connection is certainly dead, or requests are answered twice.
  bool resend = true;
  // Called (on a session thread, before libfuse sees it) with the node id of each request the
  // kernel resent; optional. Lets a file system that serves many files on one connection (the
  // EROFS blob file system) count them per file.
  std::function<void(uint64_t nodeid)> on_resent;
  // Accept FUSE passthrough at INIT when the kernel offers it (fresh mounts only; an adopted
  // connection has what its first server negotiated).
  bool passthrough = false;
};

class FuseChannel {
 public:
  FuseChannel(int fd, FuseChannelOptions options);
  FuseChannel(const FuseChannel&) = delete;
  FuseChannel& operator=(const FuseChannel&) = delete;

  // The callback table for fuse_session_custom_io.
  static const fuse_custom_io& Io();

  ssize_t Read(void* buf, size_t len);
  ssize_t Writev(const struct iovec* iov, int count);
  ssize_t SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags);

  // Waits until the INIT request (the kernel's or the replay) has been answered; false on
  // timeout.
  bool WaitInit(std::chrono::milliseconds timeout);
  // The kernel's INIT request (captured or replayed); empty before one was seen.
  std::string init_request() const;
  bool adopted() const { return !options_.replay_init.empty(); }
  // Requests the kernel sent again after FUSE_NOTIFY_RESEND (bit 63 of unique); the counter
  // outlives the channel.
  std::shared_ptr<const std::atomic<uint64_t>> resent_requests() const { return resent_; }
  // Whether FUSE_NOTIFY_RESEND was sent.
  bool sent_resend() const { return sent_resend_.load(); }

  // Whether the connection negotiated FUSE passthrough. Known once the INIT request (the
  // kernel's or the replay) was read, i.e. before libfuse's init callback runs.
  bool passthrough() const { return passthrough_.load(); }
  // The /dev/fuse fd (for the backing-file ioctls); not owned.
  int fd() const { return fd_; }
  // The next OPEN answer this thread writes (it must be the one to its current request)
  // opens the file in passthrough mode on backing file `backing_id` (> 0).
  static void ReplyNextOpenWithBacking(int32_t backing_id);

  // Stops handing out requests and waits up to `timeout` until every request handed out was
  // answered. True when none is left unanswered.
  bool Quiesce(std::chrono::milliseconds timeout);
  // From now on every read fails with ENODEV (libfuse then ends its loop). Idempotent.
  void Close();

 private:
  void Wake();
  // Writes FUSE_NOTIFY_RESEND if the saved INIT announced it.
  void MaybeResend();

  const int fd_;
  const FuseChannelOptions options_;
  const int crash_after_reads_;  // test hook; 0 = off
  UniqueFd wake_;                // eventfd: readable once Quiesce or Close was called

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string init_request_;  // guarded by mu_
  uint64_t init_unique_ = 0;  // the captured INIT's unique (fresh mounts)
  bool replay_taken_ = false;
  bool init_done_ = false;
  bool parked_ = false;
  bool closed_ = false;
  uint64_t in_flight_ = 0;  // requests handed out that need an answer and got none yet
  int in_window_ = 0;       // threads between their check of parked_ and the end of a read
  uint64_t reads_ = 0;      // FUSE_READ and FUSE_OPEN requests read (test hook)
  const std::shared_ptr<std::atomic<uint64_t>> resent_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::atomic<bool> sent_resend_{false};
  std::atomic<bool> passthrough_{false};
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_FUSE_CHANNEL_H_
