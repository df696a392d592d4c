#include "server/cri/cri_keychain_service.h"

#include "base/logging.h"

namespace lazypull::cri {

absl::StatusOr<std::unique_ptr<CriKeychainService>> CriKeychainService::FromToml(
    const toml::table& doc) {
  absl::StatusOr<CriKeychainConfig> config = CriKeychainConfigFromToml(doc);
  if (!config.ok()) return config.status();
  if (!config->enable_keychain) return nullptr;
  return std::make_unique<CriKeychainService>(*config);
}

CriKeychainService::CriKeychainService(const CriKeychainConfig& config)
    : config_(config),
      keychain_(std::make_shared<CriKeychain>(config.credential_ttl)),
      proxy_(std::make_unique<ImageServiceProxy>(
          ImageServiceProxy::NewBackendChannel(config.BackendTarget()), keychain_.get())) {
  LogInfo("CRI keychain enabled: serving runtime.v1.ImageService",
          {{"image_service_path", config_.image_service_path},
           {"credential_ttl_sec", config_.credential_ttl.count()}});
}

}  // namespace lazypull::cri
