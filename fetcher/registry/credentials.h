// CredentialStore: registry credentials from an optional CredentialProvider (the CRI keychain,
// per repository), the daemon's TOML (`[registry.auths."host"]`) and a docker `config.json`
// (`auths` entries with `auth`, `username`/`password` or `identitytoken`), in that order.
// Credential helpers (credsStore) are not supported.
#ifndef LAZYPULL_FETCHER_REGISTRY_CREDENTIALS_H_
#define LAZYPULL_FETCHER_REGISTRY_CREDENTIALS_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/registry/credential_provider.h"
#include "fetcher/registry/registry_config.h"

namespace lazypull::registry {

// Thread-safe. config.json is re-parsed only when its mtime or size changes, so edits take
// effect without a restart and a lookup per request stays cheap.
class CredentialStore {
 public:
  // `provider` may be null.
  CredentialStore(std::map<std::string, HostCredentials> per_host, std::string docker_config,
                  std::shared_ptr<const CredentialProvider> provider = nullptr);

  // Credentials for `host` ("docker.io", "127.0.0.1:5000", a mirror's host). Empty
  // credentials when none are configured. A docker config.json that exists but is malformed is
  // InvalidArgument naming the file (never its contents).
  absl::StatusOr<HostCredentials> Lookup(std::string_view host) const;

  // Credentials for a request about `repository` of `registry` sent to `host` (see
  // CredentialProvider::Find): the provider's answer when it has one, else Lookup(host).
  absl::StatusOr<HostCredentials> Lookup(std::string_view host, std::string_view registry,
                                         std::string_view repository) const;

 private:
  const std::shared_ptr<const CredentialProvider> provider_;
  const std::map<std::string, HostCredentials> per_host_;
  const std::string docker_config_;
  mutable std::mutex mu_;
  mutable int64_t cached_mtime_ns_ = -1;
  mutable int64_t cached_size_ = -1;
  mutable std::map<std::string, HostCredentials> cached_;
};

// Parses a docker config.json text into host → credentials (keys normalised: scheme and path
// stripped, index.docker.io / registry-1.docker.io → docker.io).
absl::StatusOr<std::map<std::string, HostCredentials>> ParseDockerConfig(std::string_view text,
                                                                         std::string_view file);

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_CREDENTIALS_H_
