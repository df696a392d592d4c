// RegistryConfig: the daemon's `[registry]` TOML section — where containerd's hosts.toml
// files live, credentials, timeouts, retries and connection limits.
//
//   [registry]
//   config_path = "/etc/containerd/certs.d"   # containerd certs.d layout (hosts.toml)
//   docker_config = "/root/.docker/config.json"
//   plain_http_localhost = true               # localhost/127.0.0.1/::1 default to http://
//   plain_http = ["myreg:5000"]               # hosts reached over plain HTTP
//   skip_verify = ["selfsigned.example"]      # hosts whose TLS certificate is not verified
//   connect_timeout_ms = 10000
//   request_timeout_ms = 60000                # per request (range reads, manifests)
//   total_timeout_ms = 300000                 # bound on one operation incl. all retries
//   max_retries = 5
//   initial_backoff_ms = 200
//   max_backoff_ms = 5000
//   max_concurrency_per_host = 8
//   low_speed_time_ms = 30000                 # abandon a transfer slower than
//   low_speed_bytes = 1024                    #   this many bytes/s for that long
//   merge_gap_bytes = 0                       # range reads merge ranges this close
//   multi_range = true                        # several ranges in one request when supported
//   upload_chunk_bytes = 16777216             # blob pushes above this use chunked PATCH
//   [registry.auths."127.0.0.1:5000"]
//   username = "u"
//   password = "p"                            # or auth = base64("u:p"), or identitytoken
#ifndef LAZYPULL_FETCHER_REGISTRY_REGISTRY_CONFIG_H_
#define LAZYPULL_FETCHER_REGISTRY_REGISTRY_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "toml++/toml.h"

namespace lazypull::registry {

class CredentialProvider;  // credential_provider.h
class RequestObserver;     // request_observer.h

struct HostCredentials {
  std::string username;
  std::string password;        // secret: never logged
  std::string identity_token;  // OAuth2 refresh token (docker "identitytoken"); secret
  // A bearer token sent to the registry as is, instead of asking its token server (CRI
  // AuthConfig.registry_token); secret.
  std::string registry_token = {};
  bool empty() const {
    return username.empty() && password.empty() && identity_token.empty() && registry_token.empty();
  }
};

// Value type; thread-compatible.
struct RegistryConfig {
  std::string config_path = "/etc/containerd/certs.d";
  std::string docker_config;  // empty: no docker config.json
  bool plain_http_localhost = true;
  std::set<std::string> plain_http;
  std::set<std::string> skip_verify;
  std::map<std::string, HostCredentials> auths;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::milliseconds total_timeout{300000};
  int max_retries = 5;
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  int max_concurrency_per_host = 8;
  // A transfer slower than low_speed_bytes/s for low_speed_time is abandoned (and retried):
  // a stalled or trickling registry frees its connection instead of holding it.
  std::chrono::milliseconds low_speed_time{30000};
  uint64_t low_speed_bytes = 1024;
  uint64_t merge_gap_bytes = 0;
  // Ask for several ranges in one request (multipart/byteranges) where the registry answers so.
  bool multi_range = true;
  uint64_t upload_chunk_bytes = 16 << 20;
  std::string user_agent = "lazypull/0.1";
  // Not from TOML: credentials consulted before `auths` and docker_config (the CRI keychain).
  // Null = none. Shared with whoever fills it; must be thread-safe.
  std::shared_ptr<const CredentialProvider> credential_provider;
  // Not from TOML: told about every HTTP exchange (the daemon's metrics). Null = none.
  std::shared_ptr<RequestObserver> observer;
  // Not from TOML: how long a mirror's probes of a cold repository wait for its reads to pause
  // (MirrorRoutesOptions::start_quiet; 0 = no wait). Tests set it.
  std::chrono::milliseconds mirror_start_quiet{3000};
};

// Parses the `[registry]` table (pass the table itself, not the document root). Unknown keys,
// wrong types and negative numbers are InvalidArgument naming the key. Missing keys keep the
// defaults above. Never includes secrets in error messages.
absl::StatusOr<RegistryConfig> ParseRegistryConfig(const toml::table& registry);

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_REGISTRY_CONFIG_H_
