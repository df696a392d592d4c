#include "server/remote/remote_layer_manager.h"

namespace lazypull::remote {

absl::StatusOr<std::unique_ptr<RemoteLayerHandler>> NewRemoteLayerHandler(
    const DaemonConfig& config) {
  return NewRemoteLayerHandlerWithCredentials(config, nullptr);
}

absl::StatusOr<std::unique_ptr<RemoteLayerHandler>> NewRemoteLayerHandlerWithCredentials(
    const DaemonConfig& config,
    std::shared_ptr<const registry::CredentialProvider> extra_credentials,
    std::shared_ptr<metrics::Metrics> metrics) {
  absl::StatusOr<RemoteLayerManager::Options> options =
      RemoteLayerManager::OptionsFromToml(config.root, *config.table);
  if (!options.ok()) return options.status();
  options->registry.credential_provider = std::move(extra_credentials);
  options->metrics = std::move(metrics);
  options->soci_discovery = NewSociDiscovery(config.soci_v1);
  options->soci_v1 = config.soci_v1;
  if (!options->remote.enabled) return nullptr;
  absl::StatusOr<std::unique_ptr<RemoteLayerManager>> manager =
      RemoteLayerManager::Create(std::move(*options));
  if (!manager.ok()) return manager.status();
  return std::unique_ptr<RemoteLayerHandler>(std::move(*manager));
}

}  // namespace lazypull::remote
