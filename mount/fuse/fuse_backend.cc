#include "mount/fuse/fuse_backend.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "mount/fuse/fuse_layer_fs.h"
#include "mount/fuse/stale_mounts.h"

namespace lazypull::mount {
namespace {

constexpr char kFuseCtlDir[] = "/sys/fs/fuse/connections";

// Keeps fsname free of the characters the mount option parser and mountinfo treat specially.
std::string SafeName(const std::string& id) {
  std::string out;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == ':';
    out.push_back(ok ? c : '_');
  }
  return out.substr(0, 200);
}

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

class FuseMountedLayer : public MountedLayer {
 public:
  FuseMountedLayer(const LayerMountRequest& request, const FuseOptions& options)
      : target_(request.target_dir), layer_id_(request.layer_id) {
    ctx_.reader = request.reader;
    ctx_.options = options;
  }

  ~FuseMountedLayer() override {
    if (absl::Status st = Unmount(); !st.ok()) {
      LogWarn("unmounting a lazy layer failed", {{"layer", layer_id_}, {"error", st.ToString()}});
    }
  }

  absl::Status Start() {
    std::vector<std::string> opts = {"ro", "default_permissions", "subtype=lazypull",
                                     "fsname=lazypull:" + SafeName(layer_id_),
                                     fmt::format("max_read={}", ctx_.options.max_read)};
    if (ctx_.options.allow_other) opts.push_back("allow_other");
    std::string joined;
    for (const auto& o : opts) joined += (joined.empty() ? "" : ",") + o;
    std::vector<std::string> argv_storage = {"lazypull", "-o", joined};
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    session_ = fuse_session_new(&args, &FuseLayerFsOps(), sizeof(fuse_lowlevel_ops), &ctx_);
    if (session_ == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("layer {}: fuse_session_new refused options \"{}\"", layer_id_, joined));
    }
    if (fuse_session_mount(session_, target_.c_str()) != 0) {
      fuse_session_destroy(session_);
      session_ = nullptr;
      return absl::FailedPreconditionError(
          fmt::format("layer {}: FUSE mount on {} failed (see stderr; /dev/fuse and root needed)",
                      layer_id_, target_));
    }
    mounted_ = true;
    loop_ = std::thread([this] {
      fuse_loop_config* cfg = fuse_loop_cfg_create();
      fuse_loop_cfg_set_max_threads(cfg, ctx_.options.max_threads);
      fuse_loop_cfg_set_idle_threads(cfg, std::min(ctx_.options.max_threads, 4u));
      fuse_loop_cfg_set_clone_fd(cfg, 0);
      int rc = fuse_session_loop_mt(session_, cfg);
      fuse_loop_cfg_destroy(cfg);
      std::lock_guard<std::mutex> lock(mu_);
      loop_done_ = true;
      loop_rc_ = rc;
      cv_.notify_all();
    });
    struct stat st;
    if (stat(target_.c_str(), &st) != 0) {
      absl::Status err = absl::InternalError(fmt::format("layer {}: stat of the new mount {}: {}",
                                                         layer_id_, target_, strerror(errno)));
      Unmount().IgnoreError();
      return err;
    }
    conn_ = minor(st.st_dev);
    SetReadahead(st.st_dev);
    LogInfo("lazy layer mounted",
            {{"layer", layer_id_}, {"target", target_}, {"backend", "fuse"}, {"conn", conn_}});
    return absl::OkStatus();
  }

  const std::string& target() const override { return target_; }

  // The kernel caps FUSE readahead at the bdi default (128 KiB) whatever max_readahead says;
  // raising it lets sequential reads reach the daemon in max_read-sized requests.
  void SetReadahead(dev_t dev) {
    std::string path = fmt::format("/sys/class/bdi/{}:{}/read_ahead_kb", major(dev), minor(dev));
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    std::string kb = std::to_string(ctx_.options.max_read / 1024);
    if (!fd.valid() || write(fd.get(), kb.data(), kb.size()) != static_cast<ssize_t>(kb.size())) {
      LogDebug("cannot raise the readahead of a lazy layer mount",
               {{"layer", layer_id_}, {"path", path}, {"error", strerror(errno)}});
    }
  }

  void StartBackground() override { ctx_.reader->StartBackground(); }

  absl::Status Unmount() override {
    std::lock_guard<std::mutex> unmount_lock(unmount_mu_);
    if (session_ == nullptr) return absl::OkStatus();
    absl::Status result;
    fuse_session_exit(session_);
    fuse_session_unmount(session_);  // lazy detach as root; ends the session if unused
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, ctx_.options.unmount_timeout, [&] { return loop_done_; })) {
        lock.unlock();
        LogWarn("lazy layer still in use at unmount; aborting its FUSE connection",
                {{"layer", layer_id_}, {"target", target_}, {"conn", conn_}});
        result = AbortConnection(conn_);
        lock.lock();
        if (result.ok()) cv_.wait(lock, [&] { return loop_done_; });
      }
    }
    if (loop_done_ || result.ok()) {
      if (loop_.joinable()) loop_.join();
      fuse_session_destroy(session_);
    } else {
      // The loop could not be stopped: leak the session rather than hang or free it in use.
      loop_.detach();
      LogError("FUSE session of a lazy layer could not be stopped",
               {{"layer", layer_id_}, {"error", result.ToString()}});
    }
    session_ = nullptr;
    mounted_ = false;
    LogInfo("lazy layer unmounted", {{"layer", layer_id_}, {"target", target_}});
    if (!result.ok()) {
      return absl::Status(result.code(), fmt::format("unmounting layer {} at {}: {}", layer_id_,
                                                     target_, std::string(result.message())));
    }
    return absl::OkStatus();
  }

  LayerMountStatus Status() const override {
    LayerMountStatus s;
    s.layer_id = layer_id_;
    s.backend = "fuse";
    s.target = target_;
    s.mounted = mounted_.load();
    s.reader = ctx_.reader->Stats();
    return s;
  }

 private:
  const std::string target_;
  const std::string layer_id_;
  FuseLayerFsContext ctx_;
  fuse_session* session_ = nullptr;
  unsigned conn_ = 0;
  std::thread loop_;

  std::mutex unmount_mu_;  // serializes Unmount
  std::atomic<bool> mounted_{false};
  std::mutex mu_;  // guards loop_done_/loop_rc_
  std::condition_variable cv_;
  bool loop_done_ = false;
  int loop_rc_ = 0;
};

class FuseBackend : public LayerMountBackend {
 public:
  explicit FuseBackend(const FuseOptions& options) : options_(options) {}
  std::string_view name() const override { return "fuse"; }
  absl::StatusOr<std::unique_ptr<MountedLayer>> Mount(const LayerMountRequest& request) override {
    return MountFuseLayer(request, options_);
  }

 private:
  const FuseOptions options_;
};

}  // namespace

std::unique_ptr<LayerMountBackend> NewFuseBackend(const FuseOptions& options) {
  return std::make_unique<FuseBackend>(options);
}

absl::StatusOr<std::unique_ptr<MountedLayer>> MountFuseLayer(const LayerMountRequest& request,
                                                             const FuseOptions& options) {
  if (!request.reader || request.target_dir.empty() || request.target_dir[0] != '/') {
    return absl::InvalidArgumentError(
        fmt::format("layer {}: a mount needs a reader and an absolute target (got \"{}\")",
                    request.layer_id, request.target_dir));
  }
  if (IsStaleFuseMount(request.target_dir)) {
    if (umount2(request.target_dir.c_str(), MNT_DETACH) != 0) {
      return absl::FailedPreconditionError(
          fmt::format("layer {}: detaching the stale mount at {}: {}", request.layer_id,
                      request.target_dir, strerror(errno)));
    }
    LogInfo("detached stale FUSE mount", {{"path", request.target_dir}});
  }
  struct stat st;
  if (stat(request.target_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(fmt::format("layer {}: mount target {} is not a directory",
                                                  request.layer_id, request.target_dir));
  }
  auto mounted = std::make_unique<FuseMountedLayer>(request, options);
  if (absl::Status s = mounted->Start(); !s.ok()) return s;
  return mounted;
}

}  // namespace lazypull::mount
