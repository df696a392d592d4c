#include "mount/fuse/fuse_backend.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "base/logging.h"
#include "fmt/format.h"
#include "mount/fuse/fuse_layer_fs.h"
#include "mount/fuse/fuse_session.h"
#include "mount/fuse/holder_client.h"
#include "mount/fuse/passthrough_dirs.h"
#include "mount/fuse/passthrough_files.h"
#include "mount/fuse/stale_mounts.h"

namespace lazypull::mount {
namespace {

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

  // `adopt`: a connection the FUSE holder kept for this target (a previous daemon's mount).
  absl::Status Start(std::optional<HeldConnection> adopt) {
    FuseSessionOptions o;
    o.name = "layer " + layer_id_;
    o.mount_options = {"ro", "default_permissions", "subtype=lazypull",
                       "fsname=lazypull:" + SafeName(layer_id_),
                       fmt::format("max_read={}", ctx_.options.max_read)};
    if (ctx_.options.allow_other) o.mount_options.push_back("allow_other");
    o.max_threads = ctx_.options.max_threads;
    o.unmount_timeout = ctx_.options.unmount_timeout;
    o.readahead = std::max(ctx_.options.readahead, ctx_.options.max_read);
    o.holder = ctx_.options.holder.get();
    const bool adopting = adopt.has_value();
    adopting_ = adopting;
    o.adopt = std::move(adopt);
    o.passthrough = ctx_.options.passthrough && !ctx_.options.passthrough_dir.empty();
    // An adopted connection may have negotiated passthrough even if this daemon would not:
    // the files its predecessor left open need their io modes honoured.
    if (!ctx_.options.passthrough_dir.empty() && (o.passthrough || adopting)) {
      absl::StatusOr<std::unique_ptr<PassthroughFiles>> p = PassthroughFiles::Create(
          ctx_.reader.get(), PassthroughDir(), adopting, "layer " + layer_id_);
      if (p.ok()) {
        passthrough_ = std::move(*p);
        ctx_.passthrough = passthrough_.get();
      } else {
        LogWarn("FUSE passthrough state unusable; serving without passthrough",
                {{"layer", layer_id_}, {"error", p.status().ToString()}});
        o.passthrough = false;
      }
    }
    absl::StatusOr<std::unique_ptr<FuseSession>> session =
        FuseSession::Start(FuseLayerFsOps(), &ctx_, target_, std::move(o));
    if (!session.ok()) return session.status();
    session_ = std::move(*session);
    StartPassthrough();
    mounted_ = true;
    adopted_ = session_->adopted();
    resent_ = session_->resent_requests();
    LogInfo(adopted_ ? "lazy layer adopted" : "lazy layer mounted",
            {{"layer", layer_id_},
             {"target", target_},
             {"backend", "fuse"},
             {"conn", minor(session_->dev())}});
    return absl::OkStatus();
  }

  const std::string& target() const override { return target_; }

  std::string PassthroughDir() const {
    return PassthroughStateDir(ctx_.options.passthrough_dir, target_);
  }

  // After the session started: passthrough is "on" once the kernel negotiated it and a probe
  // registered a backing file; else opens stay cached (OPEN round trips end with ENOSYS).
  void StartPassthrough() {
    if (passthrough_ == nullptr) {
      passthrough_state_ = "off";
      return;
    }
    FuseChannel* channel = ctx_.channel;
    if (channel == nullptr || !channel->passthrough()) {
      passthrough_state_ = "off";
      LogInfo("FUSE passthrough off: the kernel does not offer it on this connection",
              {{"layer", layer_id_}});
      return;
    }
    passthrough_->SetDevice(channel->fd());
    if (!ctx_.options.passthrough) {
      passthrough_state_ = "off";
      return;  // adopted: only the predecessor's open files keep their mode
    }
    if (absl::Status s = passthrough_->Probe(); !s.ok()) {
      passthrough_state_ = "unavailable";
      ctx_.no_open.store(true);
      LogWarn("FUSE passthrough unavailable; fully local files are read through the daemon",
              {{"layer", layer_id_}, {"error", s.ToString()}});
      return;
    }
    passthrough_state_ = "on";
    LogInfo("FUSE passthrough on: fully local files are read by the kernel",
            {{"layer", layer_id_}, {"adopted", adopting_}});
  }

  void StartBackground() override { ctx_.reader->StartBackground(); }

  absl::Status Unmount() override {
    std::lock_guard<std::mutex> unmount_lock(unmount_mu_);
    if (session_ == nullptr) return absl::OkStatus();
    // Readers blocked on a stalled registry must not hold the session's threads: cancel.
    ctx_.reader->Stop();
    if (passthrough_ != nullptr) passthrough_->RemoveAll();  // needs the connection's fd
    absl::Status result = session_->Stop();
    session_.reset();
    mounted_ = false;
    LogInfo("lazy layer unmounted", {{"layer", layer_id_}, {"target", target_}});
    return result;
  }

  absl::Status HandOver() override {
    std::lock_guard<std::mutex> unmount_lock(unmount_mu_);
    if (session_ == nullptr) return absl::OkStatus();
    // Even when in-flight requests could not finish, the session is done (and, with a holder,
    // the mount stays for the successor, which gets them resent): never unmount it after this.
    absl::Status result = session_->Detach();
    session_.reset();
    mounted_ = false;
    LogInfo("lazy layer handed over",
            {{"layer", layer_id_}, {"target", target_}, {"clean", result.ok()}});
    return result;
  }

  LayerMountStatus Status() const override {
    LayerMountStatus s;
    s.layer_id = layer_id_;
    s.backend = "fuse";
    s.target = target_;
    s.mounted = mounted_.load();
    s.adopted = adopted_;
    s.resent_requests = resent_ != nullptr ? resent_->load() : 0;
    s.passthrough = passthrough_state_;
    if (passthrough_ != nullptr) {
      PassthroughStats p = passthrough_->Stats();
      s.passthrough_opens = p.passthrough_opens;
      s.cached_opens = p.cached_opens;
      s.backing_files = p.backing_files;
      s.passthrough_copies = p.copies;
      s.passthrough_copy_bytes = p.copy_bytes;
      s.deferred_opens = p.deferred_opens;
    }
    s.reader = ctx_.reader->Stats();
    return s;
  }

 private:
  const std::string target_;
  const std::string layer_id_;
  FuseLayerFsContext ctx_;
  std::mutex unmount_mu_;                                // serializes Unmount and HandOver
  bool adopted_ = false;                                 // set by Start
  std::shared_ptr<const std::atomic<uint64_t>> resent_;  // set by Start
  std::unique_ptr<PassthroughFiles> passthrough_;        // outlives session_ (declared before it)
  std::string passthrough_state_;                        // set by Start
  bool adopting_ = false;
  std::unique_ptr<FuseSession> session_;
  std::atomic<bool> mounted_{false};
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
  // A mount of a previous daemon the holder kept: adopt it. (Never stat it before: with
  // nobody serving, that would wait forever.)
  std::optional<HeldConnection> adopt;
  if (options.holder != nullptr) {
    absl::StatusOr<HeldConnection> held = options.holder->Get(request.target_dir);
    if (held.ok()) {
      adopt = std::move(*held);
    } else if (held.status().code() != absl::StatusCode::kNotFound) {
      LogWarn("cannot ask the FUSE holder; mounting afresh",
              {{"target", request.target_dir}, {"error", held.status().ToString()}});
    }
  }
  if (adopt.has_value()) {
    auto mounted = std::make_unique<FuseMountedLayer>(request, options);
    if (absl::Status s = mounted->Start(std::move(adopt)); !s.ok()) return s;
    return mounted;
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
  if (absl::Status s = mounted->Start(std::nullopt); !s.ok()) return s;
  return mounted;
}

}  // namespace lazypull::mount
