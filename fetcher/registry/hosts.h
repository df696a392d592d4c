// Registry host resolution in containerd's certs.d layout: `<config_path>/<host[:port]>/
// hosts.toml` (else `<config_path>/_default/hosts.toml`) with `server`, `[host."URL"]`
// entries, `capabilities`, `skip_verify`, `ca`, `client`, `header`, `override_path`. Mirrors
// come first, in file order; the upstream server is last. A directory without hosts.toml but
// with `*.crt` / `*.cert`+`*.key` files configures CA and client certs for the upstream
// (docker's legacy layout).
#ifndef LAZYPULL_FETCHER_REGISTRY_HOSTS_H_
#define LAZYPULL_FETCHER_REGISTRY_HOSTS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/registry_config.h"

namespace lazypull::registry {

enum HostCapability : uint32_t {
  kCapPull = 1,
  kCapResolve = 2,
  kCapPush = 4,
};

// Value type.
struct RegistryHost {
  std::string scheme = "https";  // "https" or "http"
  std::string host;              // "host[:port]" to connect to
  std::string path = "/v2";      // API root path (no trailing '/')
  uint32_t capabilities = kCapPull | kCapResolve | kCapPush;
  TlsOptions tls;
  HttpHeaders headers;  // extra headers from hosts.toml
  bool mirror = false;  // false for the upstream server

  // scheme://host + path, e.g. "https://registry-1.docker.io/v2".
  std::string ApiRoot() const;
};

// The hosts to try for registry `name` (as in a Reference: "docker.io", "127.0.0.1:5000"), in
// order. Without any hosts.toml: docker.io → https://registry-1.docker.io; localhost/127.0.0.1
// → http:// when config.plain_http_localhost; names in config.plain_http → http://; others
// https://. InvalidArgument names the hosts.toml file and key on a malformed file.
absl::StatusOr<std::vector<RegistryHost>> ResolveRegistryHosts(const RegistryConfig& config,
                                                               std::string_view name);

// Parses one hosts.toml text for registry `name`; `dir` resolves relative ca/client paths.
absl::StatusOr<std::vector<RegistryHost>> ParseHostsToml(const RegistryConfig& config,
                                                         std::string_view name,
                                                         std::string_view toml_text,
                                                         const std::string& dir);

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_HOSTS_H_
