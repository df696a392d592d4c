#include "mount/fuse/fuse_channel.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "base/logging.h"
#include "mount/fuse/fuse_passthrough_abi.h"

namespace lazypull::mount {
namespace {

// The `unique` of the replayed INIT: far above anything the kernel's counter reaches, below
// the resend bit.
constexpr uint64_t kReplayUnique = 1ull << 62;

FuseChannel& Channel(void* userdata) {
  return *static_cast<FuseSessionUserdata*>(userdata)->channel;
}

ssize_t IoWritev(int, struct iovec* iov, int count, void* userdata) {
  return Channel(userdata).Writev(iov, count);
}
ssize_t IoRead(int, void* buf, size_t len, void* userdata) {
  return Channel(userdata).Read(buf, len);
}
ssize_t IoSpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags,
                     void* userdata) {
  return Channel(userdata).SpliceSend(fdin, offin, fdout, offout, len, flags);
}

// Requests the kernel expects no answer to.
bool NeedsAnswer(uint32_t opcode) {
  return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT &&
         opcode != FUSE_NOTIFY_REPLY;
}

// flags | flags2 << 32 of an INIT request (flags2 exists from protocol 7.36 on).
uint64_t InitFlags(const std::string& init) {
  constexpr size_t kFlags = sizeof(fuse_in_header) + 12;
  constexpr size_t kFlags2 = sizeof(fuse_in_header) + 16;
  if (init.size() < kFlags2 + 4) return 0;
  uint32_t flags, flags2;
  std::memcpy(&flags, init.data() + kFlags, 4);
  std::memcpy(&flags2, init.data() + kFlags2, 4);
  return flags | (static_cast<uint64_t>(flags2) << 32);
}

// Clears FUSE_PASSTHROUGH in a saved INIT request (flags2 of fuse_init_in).
void ClearPassthroughOffer(std::string* init) {
  constexpr size_t kFlags2 = sizeof(fuse_in_header) + 16;
  if (init->size() < kFlags2 + 4) return;
  uint32_t flags2;
  std::memcpy(&flags2, init->data() + kFlags2, 4);
  flags2 &= ~static_cast<uint32_t>(kFusePassthrough >> 32);
  std::memcpy(init->data() + kFlags2, &flags2, 4);
}

bool OffersPassthrough(const std::string& init) {
  const uint64_t flags = InitFlags(init);
  return (flags & kFuseInitExt) != 0 && (flags & kFusePassthrough) != 0;
}

// The OPEN answer the current thread is to send in passthrough mode (0 = none).
thread_local int32_t tl_open_backing = 0;

int CrashAfterReads() {
  const char* v = std::getenv("LAZYPULL_TEST_CRASH_AFTER_FUSE_READS");
  return v == nullptr ? 0 : std::atoi(v);
}

}  // namespace

FuseChannel::FuseChannel(int fd, FuseChannelOptions options)
    : fd_(fd),
      options_(std::move(options)),
      crash_after_reads_(CrashAfterReads()),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  const int fl = ::fcntl(fd_, F_GETFL);
  if (fl >= 0) ::fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
  if (adopted()) {
    init_request_ = options_.replay_init;
    passthrough_.store(OffersPassthrough(init_request_));
  }
}

void FuseChannel::ReplyNextOpenWithBacking(int32_t backing_id) { tl_open_backing = backing_id; }

const fuse_custom_io& FuseChannel::Io() {
  static const fuse_custom_io io = [] {
    fuse_custom_io io;
    std::memset(&io, 0, sizeof(io));
    io.writev = IoWritev;
    io.read = IoRead;
    io.splice_send = IoSpliceSend;
    return io;
  }();
  return io;
}

ssize_t FuseChannel::Read(void* buf, size_t len) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (adopted() && !replay_taken_) {
      replay_taken_ = true;
      const std::string& init = options_.replay_init;
      if (init.size() > len || init.size() < sizeof(fuse_in_header)) {
        errno = EIO;
        return -1;
      }
      std::memcpy(buf, init.data(), init.size());
      fuse_in_header h;
      std::memcpy(&h, buf, sizeof(h));
      h.unique = kReplayUnique;
      std::memcpy(buf, &h, sizeof(h));
      return static_cast<ssize_t>(init.size());
    }
    // Nothing reaches libfuse before the replayed INIT was answered: it would answer EIO.
    cv_.wait(lock, [&] { return !adopted() || init_done_ || closed_; });
  }
  // Leaves the poll-and-read window (see Quiesce); `opcode` of the request read, if any.
  auto leave_window = [this](std::optional<uint32_t> opcode) {
    std::lock_guard<std::mutex> lock(mu_);
    --in_window_;
    if (opcode.has_value() && NeedsAnswer(*opcode)) ++in_flight_;
    cv_.notify_all();
  };
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (parked_) cv_.wait(lock, [&] { return closed_; });
      if (closed_) {
        errno = ENODEV;
        return -1;
      }
      ++in_window_;
    }
    pollfd p[2] = {{fd_, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      const int err = errno;
      leave_window(std::nullopt);
      if (err == EINTR) continue;
      errno = err;
      return -1;
    }
    if (p[1].revents != 0) {
      leave_window(std::nullopt);
      continue;
    }
    const ssize_t n = ::read(fd_, buf, len);
    const int err = errno;
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) {
      leave_window(std::nullopt);
      if (n < 0 && (err == EAGAIN || err == EINTR)) continue;  // another thread took it
      errno = err;
      return n;  // ENODEV ends the loop; ENOENT retries; a short read is libfuse's to report
    }
    fuse_in_header h;
    std::memcpy(&h, buf, sizeof(h));
    leave_window(h.opcode);
    bool crash = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (h.opcode == FUSE_INIT && !adopted() && init_request_.empty()) {
        init_request_.assign(static_cast<const char*>(buf), static_cast<size_t>(n));
        init_unique_ = h.unique;
        if (options_.passthrough && OffersPassthrough(init_request_)) {
          passthrough_.store(true);
        } else {
          ClearPassthroughOffer(&init_request_);  // what a successor must believe
        }
      }
      // OPEN too: with passthrough, reads of local files never reach the daemon.
      if ((h.opcode == FUSE_READ || h.opcode == FUSE_OPEN) && crash_after_reads_ > 0) {
        crash = ++reads_ == static_cast<uint64_t>(crash_after_reads_);
      }
    }
    if ((h.unique & kFuseUniqueResend) != 0) {
      resent_->fetch_add(1);
      if (options_.on_resent) options_.on_resent(h.nodeid);
      LogDebug("FUSE request resent by the kernel",
               {{"name", options_.name}, {"opcode", h.opcode}, {"unique", h.unique}});
    }
    if (crash) {
      LogWarn("test hook: killing the daemon after reading a FUSE read or open request",
              {{"name", options_.name}, {"unique", h.unique}});
      ::kill(::getpid(), SIGKILL);
      ::pause();
    }
    return n;
  }
}

ssize_t FuseChannel::Writev(const struct iovec* iov, int count) {
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  fuse_out_header h{};
  if (count > 0 && iov[0].iov_len >= sizeof(h)) std::memcpy(&h, iov[0].iov_base, sizeof(h));
  if (h.unique == kReplayUnique) {
    // The answer to the replayed INIT: the kernel negotiated with the first server already.
    MaybeResend();
    std::lock_guard<std::mutex> lock(mu_);
    init_done_ = true;
    cv_.notify_all();
    return static_cast<ssize_t>(total);
  }
  // Passthrough rewrites (see the header): the INIT answer of a fresh mount and OPEN answers.
  std::string init_buf;
  fuse_open_out open_out;
  struct iovec patched[2];
  const int32_t backing = std::exchange(tl_open_backing, 0);
  const bool is_init = !adopted() && h.unique != 0 && h.unique == init_unique_ && h.error == 0 &&
                       passthrough_.load();
  if (is_init && count >= 2) {
    for (int i = 1; i < count; ++i) {
      init_buf.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    }
    if (init_buf.size() >= kInitOutMinSize) {
      uint32_t flags, flags2, depth = kPassthroughStackDepth;
      std::memcpy(&flags, init_buf.data() + kInitOutFlags, 4);
      std::memcpy(&flags2, init_buf.data() + kInitOutFlags2, 4);
      flags |= static_cast<uint32_t>(kFuseInitExt);
      flags2 |= static_cast<uint32_t>(kFusePassthrough >> 32);
      std::memcpy(init_buf.data() + kInitOutFlags, &flags, 4);
      std::memcpy(init_buf.data() + kInitOutFlags2, &flags2, 4);
      std::memcpy(init_buf.data() + kInitOutMaxStackDepth, &depth, 4);
      patched[0] = iov[0];
      patched[1] = {init_buf.data(), init_buf.size()};
      iov = patched;
      count = 2;
    } else {
      passthrough_.store(false);  // libfuse answered too short a reply to carry the depth
    }
  } else if (backing > 0 && h.error == 0 && count == 2 && iov[1].iov_len == sizeof(open_out)) {
    std::memcpy(&open_out, iov[1].iov_base, sizeof(open_out));
    open_out.open_flags = (open_out.open_flags & ~kFopenKeepCache) | kFopenPassthrough;
    std::memcpy(&open_out.padding, &backing, sizeof(backing));  // backing_id since 7.40
    patched[0] = iov[0];
    patched[1] = {&open_out, sizeof(open_out)};
    iov = patched;
  }
  const ssize_t n = ::writev(fd_, iov, count);
  const int err = errno;
  if (h.unique != 0) {  // 0 = a notification, not an answer
    std::lock_guard<std::mutex> lock(mu_);
    if (in_flight_ > 0) --in_flight_;
    if (!adopted() && h.unique == init_unique_) init_done_ = true;
    cv_.notify_all();
  }
  errno = err;
  return n;
}

ssize_t FuseChannel::SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                unsigned flags) {
  const ssize_t n = ::splice(fdin, offin, fdout, offout, len, flags);
  const int err = errno;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (in_flight_ > 0) --in_flight_;
    cv_.notify_all();
  }
  errno = err;
  return n;
}

void FuseChannel::MaybeResend() {
  if (!options_.resend || (InitFlags(options_.replay_init) & kFuseHasResend) == 0) {
    LogInfo("FUSE connection adopted without resend",
            {{"name", options_.name}, {"kernel_has_resend", false}});
    return;
  }
  fuse_out_header notify{};
  notify.len = sizeof(notify);
  notify.error = kFuseNotifyResend;
  notify.unique = 0;
  if (::write(fd_, &notify, sizeof(notify)) != static_cast<ssize_t>(sizeof(notify))) {
    LogWarn("FUSE_NOTIFY_RESEND failed", {{"name", options_.name}, {"error", strerror(errno)}});
    return;
  }
  sent_resend_.store(true);
  LogDebug("FUSE_NOTIFY_RESEND sent", {{"name", options_.name}});
}

bool FuseChannel::WaitInit(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return init_done_; });
}

std::string FuseChannel::init_request() const {
  std::lock_guard<std::mutex> lock(mu_);
  return init_request_;
}

void FuseChannel::Wake() {
  const uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof(one)) < 0) {
    // Only EAGAIN (counter full) is possible, and then it is readable anyway.
  }
}

bool FuseChannel::Quiesce(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  parked_ = true;
  Wake();
  cv_.notify_all();
  // A thread between its check of parked_ and the end of its read may still take a request;
  // once none is, every request read is counted in in_flight_ (libfuse has not been told to
  // exit yet, so it processes them all).
  return cv_.wait_for(lock, timeout, [&] { return in_window_ == 0 && in_flight_ == 0; });
}

void FuseChannel::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  Wake();
  cv_.notify_all();
}

}  // namespace lazypull::mount
