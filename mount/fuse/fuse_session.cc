#include "mount/fuse/fuse_session.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/logging.h"
#include "base/unique_fd.h"
#include "fmt/format.h"

namespace lazypull::mount {
namespace {

constexpr char kFuseCtlDir[] = "/sys/fs/fuse/connections";

// Aborts the FUSE connection `conn` (the minor of the mount's st_dev) through fusectl,
// mounting fusectl if needed.
absl::Status AbortConnection(unsigned conn) {
  std::string path = fmt::format("{}/{}/abort", kFuseCtlDir, conn);
  if (access(path.c_str(), F_OK) != 0) {
    if (::mount("fusectl", kFuseCtlDir, "fusectl", 0, nullptr) != 0 && errno != EBUSY) {
      return absl::InternalError(fmt::format("mount fusectl: {}", strerror(errno)));
    }
  }
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::InternalError(fmt::format("open {}: {}", path, strerror(errno)));
  if (write(fd.get(), "1", 1) != 1) {
    return absl::InternalError(fmt::format("write {}: {}", path, strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<FuseSession>> FuseSession::Start(const fuse_lowlevel_ops& ops,
                                                                FuseSessionUserdata* userdata,
                                                                const std::string& target,
                                                                FuseSessionOptions options) {
  std::unique_ptr<FuseSession> s(new FuseSession(target, std::move(options)));
  if (absl::Status st = s->Begin(ops, userdata); !st.ok()) return st;
  return s;
}

absl::Status FuseSession::Begin(const fuse_lowlevel_ops& ops, FuseSessionUserdata* userdata) {
  // Every lazypull FUSE mount lets the kernel check file modes: without it, allow_other would
  // let any user open any file whatever its mode.
  std::vector<std::string> mount_options = options_.mount_options;
  if (std::find(mount_options.begin(), mount_options.end(), "default_permissions") ==
      mount_options.end()) {
    mount_options.push_back("default_permissions");
  }
  std::string joined;
  for (const auto& o : mount_options) joined += (joined.empty() ? "" : ",") + o;
  std::vector<std::string> argv_storage = {"lazypull", "-o", joined};
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  session_ = fuse_session_new(&args, &ops, sizeof(fuse_lowlevel_ops), userdata);
  if (session_ == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("{}: fuse_session_new refused options \"{}\"", options_.name, joined));
  }
  int fd;
  if (adopt_.has_value()) {
    // A connection the holder kept: no mount, no INIT from the kernel (see fuse_channel.h).
    fd = adopt_->fd.Release();
    FuseChannelOptions co;
    co.name = options_.name;
    co.replay_init = std::move(adopt_->init_request);
    co.on_resent = options_.on_resent;
    adopt_.reset();
    channel_ = std::make_unique<FuseChannel>(fd, std::move(co));
    adopted_ = true;
  } else {
    if (fuse_session_mount(session_, target_.c_str()) != 0) {
      fuse_session_destroy(session_);
      session_ = nullptr;
      return absl::FailedPreconditionError(
          fmt::format("{}: FUSE mount on {} failed (see stderr; /dev/fuse and root needed)",
                      options_.name, target_));
    }
    fd = fuse_session_fd(session_);
    FuseChannelOptions co;
    co.name = options_.name;
    co.passthrough = options_.passthrough;
    channel_ = std::make_unique<FuseChannel>(fd, std::move(co));
  }
  userdata->channel = channel_.get();
  resent_ = channel_->resent_requests();
  if (int rc = fuse_session_custom_io(session_, &FuseChannel::Io(), fd); rc != 0) {
    if (adopted_) {
      ::close(fd);
    } else {
      fuse_session_unmount(session_);
    }
    fuse_session_destroy(session_);
    session_ = nullptr;
    return absl::InternalError(
        fmt::format("{}: fuse_session_custom_io: {}", options_.name, strerror(-rc)));
  }
  loop_ = std::thread([this] {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, options_.max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, std::min(options_.max_threads, 4u));
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_session_loop_mt(session_, cfg);
    fuse_loop_cfg_destroy(cfg);
    std::lock_guard<std::mutex> lock(mu_);
    loop_done_ = true;
    cv_.notify_all();
  });
  struct stat st;
  if (stat(target_.c_str(), &st) != 0) {
    absl::Status err = absl::InternalError(
        fmt::format("{}: stat of the new mount {}: {}", options_.name, target_, strerror(errno)));
    Stop().IgnoreError();
    return err;
  }
  dev_ = st.st_dev;
  if (!adopted_) SetReadahead();  // an adopted mount keeps what its first server set
  if (adopted_) {
    LogInfo("FUSE connection adopted", {{"name", options_.name}, {"target", target_}});
  } else {
    RegisterWithHolder();
  }
  return absl::OkStatus();
}

void FuseSession::RegisterWithHolder() {
  if (options_.holder == nullptr) return;
  // The kernel sends INIT at mount; the stat above already waited for its answer.
  if (!channel_->WaitInit(std::chrono::seconds(10))) {
    LogWarn("no INIT seen on a new FUSE mount; it will not survive a daemon restart",
            {{"name", options_.name}, {"target", target_}});
    return;
  }
  absl::Status s =
      options_.holder->Put(target_, fuse_session_fd(session_), channel_->init_request());
  if (!s.ok()) {
    LogWarn("the FUSE holder did not take a new mount; it will not survive a daemon restart",
            {{"name", options_.name}, {"target", target_}, {"error", s.ToString()}});
  }
}

// The kernel caps FUSE readahead at the bdi default (128 KiB) whatever max_readahead says;
// raising it lets sequential reads reach the daemon in max_read-sized requests.
void FuseSession::SetReadahead() {
  if (options_.readahead == 0) return;
  std::string path = fmt::format("/sys/class/bdi/{}:{}/read_ahead_kb", major(dev_), minor(dev_));
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  std::string kb = std::to_string(options_.readahead / 1024);
  if (!fd.valid() || write(fd.get(), kb.data(), kb.size()) != static_cast<ssize_t>(kb.size())) {
    LogDebug("cannot raise the readahead of a FUSE mount",
             {{"name", options_.name}, {"path", path}, {"error", strerror(errno)}});
  }
}

FuseSession::~FuseSession() {
  if (absl::Status st = Stop(); !st.ok()) {
    LogWarn("stopping a FUSE session failed", {{"name", options_.name}, {"error", st.ToString()}});
  }
}

bool FuseSession::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return session_ != nullptr && !loop_done_;
}

absl::Status FuseSession::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  if (session_ == nullptr) return absl::OkStatus();
  fuse_session_exit(session_);
  if (adopted_) {
    // libfuse did not mount it, so it does not know the mount point.
    if (::umount2(target_.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      LogWarn("unmounting an adopted FUSE mount failed",
              {{"name", options_.name}, {"target", target_}, {"error", strerror(errno)}});
    }
  } else {
    fuse_session_unmount(session_);  // lazy detach as root; ends the session if unused
  }
  absl::Status result = EndLoopLocked(/*abort=*/true);
  if (options_.holder != nullptr) {
    if (absl::Status s = options_.holder->Forget(target_); !s.ok()) {
      LogWarn("the FUSE holder could not forget an unmounted mount",
              {{"target", target_}, {"error", s.ToString()}});
    }
  }
  if (!result.ok()) {
    return absl::Status(result.code(), fmt::format("unmounting {} at {}: {}", options_.name,
                                                   target_, std::string(result.message())));
  }
  return absl::OkStatus();
}

absl::Status FuseSession::Detach() {
  if (options_.holder == nullptr) return Stop();
  // Leave the mount only to a holder that has it: else nothing would keep it alive.
  if (absl::StatusOr<HeldConnection> held = options_.holder->Get(target_); !held.ok()) {
    LogWarn("the FUSE holder does not keep this mount; unmounting instead of handing over",
            {{"name", options_.name}, {"target", target_}, {"error", held.status().ToString()}});
    return Stop();
  }
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  if (session_ == nullptr) return absl::OkStatus();
  const bool idle = channel_->Quiesce(options_.unmount_timeout);
  if (!idle) {
    LogWarn("FUSE requests still unanswered at handover; the successor gets them resent",
            {{"name", options_.name}, {"target", target_}});
  }
  channel_->Close();
  fuse_session_exit(session_);
  absl::Status result = EndLoopLocked(/*abort=*/false);
  LogInfo("FUSE mount left to the holder", {{"name", options_.name}, {"target", target_}});
  return result;
}

absl::Status FuseSession::EndLoopLocked(bool abort) {
  absl::Status result;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, options_.unmount_timeout, [&] { return loop_done_; })) {
      lock.unlock();
      if (abort) {
        LogWarn("FUSE mount still in use at unmount; aborting its connection",
                {{"name", options_.name}, {"target", target_}, {"conn", minor(dev_)}});
        result = AbortConnection(minor(dev_));
      } else {
        result = absl::DeadlineExceededError("the session loop did not end");
      }
      lock.lock();
      if (result.ok()) cv_.wait(lock, [&] { return loop_done_; });
    }
  }
  bool done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done = loop_done_;
  }
  if (done || result.ok()) {
    if (loop_.joinable()) loop_.join();
    fuse_session_destroy(session_);
  } else {
    // The loop could not be stopped: leak the session (and the channel its threads use)
    // rather than hang or free them in use.
    loop_.detach();
    (void)channel_.release();
    LogError("FUSE session could not be stopped",
             {{"name", options_.name}, {"error", result.ToString()}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    session_ = nullptr;
  }
  return result;
}

}  // namespace lazypull::mount
