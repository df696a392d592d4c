// CredentialProvider: a narrow seam through which credentials that live outside lazypull's
// configuration reach the registry client — today the CRI keychain (server/cri), which keeps
// the AuthConfig of each CRI PullImage in memory for that image's registry and repository.
//
// CredentialStore asks its provider first, per request, with the reference's registry and
// repository and the host actually contacted (the registry itself or one of its mirrors);
// when the provider knows nothing (nullopt) the static sources apply ([registry.auths],
// docker config.json). Credentials are per repository, as kubelet hands them out per image.
#ifndef LAZYPULL_FETCHER_REGISTRY_CREDENTIAL_PROVIDER_H_
#define LAZYPULL_FETCHER_REGISTRY_CREDENTIAL_PROVIDER_H_

#include <optional>
#include <string_view>

#include "fetcher/registry/registry_config.h"

namespace lazypull::registry {

// Implementations must be thread-safe and fast (called for every authenticated request and
// token fetch, under no lock of the caller), must not block on I/O, and must never log the
// secrets they return.
class CredentialProvider {
 public:
  virtual ~CredentialProvider() = default;

  // Credentials for pulling `repository` ("library/ubuntu") of `registry` (the reference's host
  // as Reference::host spells it: "docker.io", "127.0.0.1:5000") through `host` (host[:port]
  // the request goes to). nullopt: this provider has none for it.
  virtual std::optional<HostCredentials> Find(std::string_view registry,
                                              std::string_view repository,
                                              std::string_view host) const = 0;
};

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_CREDENTIAL_PROVIDER_H_
