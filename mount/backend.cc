#include "mount/backend.h"

#include "mount/fuse/fuse_backend.h"

namespace lazypull::mount {

nlohmann::json LayerMountStatus::ToJson() const {
  nlohmann::json j = reader.ToJson();
  j["layer"] = layer_id;
  j["backend"] = backend;
  j["target"] = target;
  j["mounted"] = mounted;
  return j;
}

absl::StatusOr<std::unique_ptr<LayerMountBackend>> NewLayerMountBackend(const MountConfig& config) {
  switch (config.backend) {
    case BackendKind::kFuse:
    case BackendKind::kAuto:
      return NewFuseBackend(config.fuse);
    case BackendKind::kErofs:
      break;
  }
  return absl::UnimplementedError("mount backend \"erofs\" is not available yet");
}

}  // namespace lazypull::mount
