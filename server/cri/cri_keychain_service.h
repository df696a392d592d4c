// CriKeychainService: what `[cri_keychain] enable_keychain = true` turns on — a CriKeychain
// (credentials from CRI PullImage, in memory) and the ImageServiceProxy that fills it while
// forwarding the CRI ImageService to containerd — built from the daemon's TOML. The daemon
// serves grpc_service() on its socket; the remote-layer path reads credentials().
//
// Lifetime: must outlive the Daemon whose gRPC server serves grpc_service() and every
// RegistryClient holding credentials(). Thread-safe.
#ifndef LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_SERVICE_H_
#define LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_SERVICE_H_

#include <grpcpp/generic/async_generic_service.h>
#include <toml++/toml.h>

#include <memory>

#include "absl/status/statusor.h"
#include "fetcher/registry/credential_provider.h"
#include "server/cri/cri_keychain.h"
#include "server/cri/cri_keychain_config.h"
#include "server/cri/image_service_proxy.h"

namespace lazypull::cri {

class CriKeychainService {
 public:
  // From the `[cri_keychain]` section of the daemon's TOML document. Null when the keychain is
  // not enabled. InvalidArgument for a bad section. Connects to nothing yet (the backend
  // channel connects on the first call).
  static absl::StatusOr<std::unique_ptr<CriKeychainService>> FromToml(const toml::table& doc);

  explicit CriKeychainService(const CriKeychainConfig& config);

  const CriKeychainConfig& config() const { return config_; }
  std::shared_ptr<const registry::CredentialProvider> credentials() const { return keychain_; }
  CriKeychain& keychain() { return *keychain_; }
  grpc::CallbackGenericService* grpc_service() { return proxy_.get(); }

 private:
  const CriKeychainConfig config_;
  std::shared_ptr<CriKeychain> keychain_;
  std::unique_ptr<ImageServiceProxy> proxy_;
};

}  // namespace lazypull::cri

#endif  // LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_SERVICE_H_
