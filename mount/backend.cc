#include "mount/backend.h"

#include <mutex>

#include "base/logging.h"
#include "fmt/format.h"
#include "mount/erofs/erofs_backend.h"
#include "mount/erofs/erofs_probe.h"
#include "mount/fuse/fuse_backend.h"

namespace lazypull::mount {
namespace {

// Routes each mount to the configured backend or the one a request names. The EROFS backend is
// created after a successful probe: at start for "erofs"/"auto", on the first request that asks
// for it otherwise.
class SelectingBackend : public LayerMountBackend {
 public:
  SelectingBackend(const MountConfig& config, ErofsProbe probe)
      : config_(config), probe_(std::move(probe)), fuse_(NewFuseBackend(config.fuse)) {}

  // Decides the default backend. Errors only for "erofs" on a kernel that cannot.
  absl::Status Init() {
    if (config_.backend == BackendKind::kFuse) {
      default_ = BackendKind::kFuse;
      return absl::OkStatus();
    }
    absl::Status erofs = EnsureErofs();
    if (erofs.ok()) {
      default_ = BackendKind::kErofs;
      std::lock_guard<std::mutex> lock(mu_);
      LogInfo("mount backend", {{"configured", BackendKindName(config_.backend)},
                                {"using", "erofs"},
                                {"dir", config_.erofs.dir},
                                {"erofs_attach_configured", ErofsAttachName(config_.erofs.attach)},
                                {"erofs", support_.ToJson()}});
      return absl::OkStatus();
    }
    if (config_.backend == BackendKind::kErofs) {
      return absl::FailedPreconditionError(
          fmt::format("mount.backend = \"erofs\" but {}", std::string(erofs.message())));
    }
    default_ = BackendKind::kFuse;
    LogWarn("EROFS unavailable, lazy layers are mounted with FUSE",
            {{"configured", "auto"}, {"using", "fuse"}, {"reason", std::string(erofs.message())}});
    return absl::OkStatus();
  }

  std::string_view name() const override { return BackendKindName(default_); }

  absl::StatusOr<std::unique_ptr<MountedLayer>> Mount(const LayerMountRequest& request) override {
    absl::StatusOr<LayerMountBackend*> b = Pick(request.backend, request.layer_id);
    if (!b.ok()) return b.status();
    return (*b)->Mount(request);
  }

  absl::StatusOr<std::unique_ptr<MountedLayer>> MountLocal(const std::string& layer_id,
                                                           const std::string& target_dir,
                                                           std::string_view backend,
                                                           uint64_t mount_id) override {
    absl::StatusOr<LayerMountBackend*> b = Pick(backend, layer_id);
    if (!b.ok()) return b.status();
    return (*b)->MountLocal(layer_id, target_dir, backend, mount_id);
  }

  void DropLocal(const std::string& layer_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (erofs_ != nullptr) erofs_->DropLocal(layer_id);
  }

  void DropLocalExcept(const std::set<std::string>& keep) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (erofs_ != nullptr) {
      erofs_->DropLocalExcept(keep);
    } else if (!config_.erofs.dir.empty()) {
      // EROFS is off now; copies an earlier configuration made must not stay forever.
      DropUnusedErofsCopies(config_.erofs, keep);
    }
  }

  void HandOverShared() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (erofs_ != nullptr) erofs_->HandOverShared();
  }

  std::set<std::string> FinishRestore() override {
    std::lock_guard<std::mutex> lock(mu_);
    return erofs_ != nullptr ? erofs_->FinishRestore() : std::set<std::string>();
  }

  uint64_t LocalBytes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return erofs_ != nullptr ? erofs_->LocalBytes() : 0;
  }

  nlohmann::json Describe() const override {
    nlohmann::json j = {{"backend", std::string(name())}};
    std::lock_guard<std::mutex> lock(mu_);
    if (erofs_ != nullptr) j.update(support_.ToJson());
    return j;
  }

 private:
  absl::Status EnsureErofs() {
    std::lock_guard<std::mutex> lock(mu_);
    if (erofs_ != nullptr) return absl::OkStatus();
    if (!erofs_error_.ok()) return erofs_error_;
    absl::StatusOr<erofs::ErofsSupport> support =
        probe_ ? probe_(config_) : erofs::ProbeErofs(config_.erofs);
    if (!support.ok()) {
      erofs_error_ = support.status();
      return erofs_error_;
    }
    if (config_.erofs.dir.empty()) {
      erofs_error_ = absl::InvalidArgumentError("the EROFS backend needs a state directory");
      return erofs_error_;
    }
    support_ = *support;
    erofs_ = NewErofsBackend(config_.erofs, config_.fuse, support_);
    return absl::OkStatus();
  }

  absl::StatusOr<LayerMountBackend*> Pick(std::string_view requested, const std::string& layer_id) {
    BackendKind kind = default_;
    if (requested == "fuse") {
      kind = BackendKind::kFuse;
    } else if (requested == "erofs") {
      kind = BackendKind::kErofs;
    } else if (!requested.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("layer {}: backend \"{}\" is not fuse or erofs", layer_id, requested));
    }
    if (kind == BackendKind::kFuse) return fuse_.get();
    if (absl::Status s = EnsureErofs(); !s.ok()) {
      return absl::FailedPreconditionError(fmt::format("layer {}: backend erofs requested but {}",
                                                       layer_id, std::string(s.message())));
    }
    std::lock_guard<std::mutex> lock(mu_);
    return erofs_.get();
  }

  const MountConfig config_;
  const ErofsProbe probe_;
  const std::unique_ptr<LayerMountBackend> fuse_;
  BackendKind default_ = BackendKind::kFuse;
  mutable std::mutex mu_;  // guards erofs_, erofs_error_, support_
  std::unique_ptr<LayerMountBackend> erofs_;
  absl::Status erofs_error_;
  erofs::ErofsSupport support_;
};

}  // namespace

nlohmann::json LayerMountStatus::ToJson() const {
  nlohmann::json j = reader.ToJson();
  j["layer"] = layer_id;
  j["backend"] = backend;
  j["target"] = target;
  j["mounted"] = mounted;
  j["graduated"] = graduated;
  if (!graduation.empty()) j["graduation"] = graduation;
  if (!attach.empty()) j["attach"] = attach;
  j["adopted"] = adopted;
  j["resent_requests"] = resent_requests;
  if (!passthrough.empty()) {
    j["passthrough"] = passthrough;
    j["passthrough_opens"] = passthrough_opens;
    j["cached_opens"] = cached_opens;
    j["backing_files"] = backing_files;
    j["passthrough_copies"] = passthrough_copies;
    j["passthrough_copy_bytes"] = passthrough_copy_bytes;
    j["deferred_opens"] = deferred_opens;
  }
  return j;
}

absl::StatusOr<std::unique_ptr<LayerMountBackend>> NewLayerMountBackend(const MountConfig& config,
                                                                        ErofsProbe probe) {
  auto backend = std::make_unique<SelectingBackend>(config, std::move(probe));
  if (absl::Status s = backend->Init(); !s.ok()) return s;
  return backend;
}

}  // namespace lazypull::mount
