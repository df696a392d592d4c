// Authorizer: registry authentication per host — anonymous, Basic, and the Bearer token flow
// driven by `WWW-Authenticate` challenges (docker distribution token spec): tokens are fetched
// from the challenge's realm with service and scope, cached per (host, scope) until they
// expire, and refreshed when the registry answers 401 to one. Credentials are looked up per
// request for the image reference's registry and repository (CredentialStore), so per-repository
// credentials (the CRI keychain) apply; a registry token among them is used as the bearer token
// without asking the token server.
#ifndef LAZYPULL_FETCHER_REGISTRY_AUTHORIZER_H_
#define LAZYPULL_FETCHER_REGISTRY_AUTHORIZER_H_

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/registry/credentials.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/reference.h"

namespace lazypull::registry {

struct AuthChallenge {
  std::string scheme;                         // lower-case: "basic", "bearer"
  std::map<std::string, std::string> params;  // realm, service, scope, error, ...
};

// Parses a WWW-Authenticate header value (one or more challenges, quoted-string params).
std::vector<AuthChallenge> ParseWwwAuthenticate(std::string_view value);

// Thread-safe. Does not own `transport` or `credentials`; both must outlive it.
class Authorizer {
 public:
  Authorizer(HttpTransport* transport, const CredentialStore* credentials,
             std::chrono::milliseconds request_timeout);

  // The Authorization header value for a request about `ref` (its registry and repository
  // select the credentials) sent to `host` (host[:port] actually connected to) needing `scope`
  // ("repository:foo/bar:pull"), or "" when the host needs none (or has not challenged yet).
  // May fetch a token when the host is known to use Bearer and none is cached. Errors name host
  // and realm (never credentials or tokens).
  absl::StatusOr<std::string> HeaderFor(const Reference& ref, const std::string& host,
                                        const std::string& scope, const TlsOptions& tls);

  // Handles a 401 from `host`: learns the scheme from the challenge, drops the cached token for
  // `scope` (it was rejected), and fetches a new one. Returns Unauthenticated if the challenge
  // cannot be met (no credentials for Basic, unknown scheme) or PermissionDenied/Unauthenticated
  // from the token server.
  absl::Status OnUnauthorized(const Reference& ref, const std::string& host,
                              const std::string& scope, const HttpResponse& response,
                              const TlsOptions& tls);

  // Number of token requests made so far (tests assert caching with it).
  int token_fetches() const;

 private:
  struct HostState {
    std::string scheme;  // "basic" or "bearer"
    std::string realm, service;
  };
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  absl::StatusOr<Token> FetchToken(const Reference& ref, const std::string& host,
                                   const HostState& state, const std::string& scope,
                                   const TlsOptions& tls);

  HttpTransport* const transport_;
  const CredentialStore* const credentials_;
  const std::chrono::milliseconds request_timeout_;
  mutable std::mutex mu_;
  std::map<std::string, HostState> hosts_;
  std::map<std::string, Token> tokens_;  // key: host + " " + scope
  int token_fetches_ = 0;
};

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_AUTHORIZER_H_
