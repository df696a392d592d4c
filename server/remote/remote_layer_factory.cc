#include "server/remote/remote_layer_manager.h"

namespace lazypull::remote {

absl::StatusOr<std::unique_ptr<RemoteLayerHandler>> NewRemoteLayerHandler(
    const DaemonConfig& config) {
  absl::StatusOr<RemoteLayerManager::Options> options =
      RemoteLayerManager::OptionsFromToml(config.root, *config.table);
  if (!options.ok()) return options.status();
  if (!options->remote.enabled) return nullptr;
  absl::StatusOr<std::unique_ptr<RemoteLayerManager>> manager =
      RemoteLayerManager::Create(std::move(*options));
  if (!manager.ok()) return manager.status();
  return std::unique_ptr<RemoteLayerHandler>(std::move(*manager));
}

}  // namespace lazypull::remote
