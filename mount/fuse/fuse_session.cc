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
                                                                void* userdata,
                                                                const std::string& target,
                                                                const FuseSessionOptions& options) {
  std::unique_ptr<FuseSession> s(new FuseSession(target, options));
  if (absl::Status st = s->Begin(ops, userdata); !st.ok()) return st;
  return s;
}

absl::Status FuseSession::Begin(const fuse_lowlevel_ops& ops, void* userdata) {
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
  if (fuse_session_mount(session_, target_.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    return absl::FailedPreconditionError(
        fmt::format("{}: FUSE mount on {} failed (see stderr; /dev/fuse and root needed)",
                    options_.name, target_));
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
  SetReadahead();
  return absl::OkStatus();
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
  absl::Status result;
  fuse_session_exit(session_);
  fuse_session_unmount(session_);  // lazy detach as root; ends the session if unused
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, options_.unmount_timeout, [&] { return loop_done_; })) {
      lock.unlock();
      LogWarn("FUSE mount still in use at unmount; aborting its connection",
              {{"name", options_.name}, {"target", target_}, {"conn", minor(dev_)}});
      result = AbortConnection(minor(dev_));
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
    // The loop could not be stopped: leak the session rather than hang or free it in use.
    loop_.detach();
    LogError("FUSE session could not be stopped",
             {{"name", options_.name}, {"error", result.ToString()}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    session_ = nullptr;
  }
  if (!result.ok()) {
    return absl::Status(result.code(), fmt::format("unmounting {} at {}: {}", options_.name,
                                                   target_, std::string(result.message())));
  }
  return absl::OkStatus();
}

}  // namespace lazypull::mount
