// TokenServer: a docker-distribution token server for tests, on 127.0.0.1. It generates an
// RSA key and self-signed certificate with openssl (the registry's `auth.token.rootcertbundle`),
// checks Basic credentials, and issues RS256 JWTs (header `kid` = libtrust key ID) granting
// the requested repository scopes.
#ifndef LAZYPULL_TESTS_REGISTRY_TOKEN_SERVER_H_
#define LAZYPULL_TESTS_REGISTRY_TOKEN_SERVER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::testing {

class TokenServer {
 public:
  static constexpr char kService[] = "lazypull-registry";
  static constexpr char kIssuer[] = "lazypull-test-issuer";

  // Key material goes to `dir`. Only `user`/`password` get tokens (401 otherwise).
  static absl::StatusOr<std::unique_ptr<TokenServer>> Start(const std::string& dir,
                                                            const std::string& user,
                                                            const std::string& password);
  ~TokenServer();

  std::string realm() const;  // http://127.0.0.1:PORT/token
  std::string cert_path() const { return dir_ + "/token.crt"; }
  int token_requests() const { return requests_.load(); }
  // The next `n` tokens are already expired for the registry (exp in the past) while the
  // response claims expires_in=300, so the client caches them and must refresh on 401.
  void IssueExpiredTokens(int n) { expired_left_ = n; }
  // Also accept OAuth2 POST requests (grant_type=refresh_token) carrying this token, as docker
  // does for config.json `identitytoken` entries; answered with `access_token`.
  void AcceptRefreshToken(const std::string& token) {
    std::lock_guard<std::mutex> l(mu_);
    refresh_token_ = token;
  }
  int oauth_requests() const { return oauth_requests_.load(); }
  // Scopes of every token request, in order.
  std::vector<std::string> scopes() const;

 private:
  TokenServer() = default;
  void Loop();
  void Handle(int fd);
  std::string MakeJwt(const std::string& scope_query, bool expired);

  std::string dir_, user_, password_, kid_;
  void* pkey_ = nullptr;  // EVP_PKEY*
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> expired_left_{0};
  std::atomic<int> oauth_requests_{0};
  std::string refresh_token_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<std::string> scopes_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_REGISTRY_TOKEN_SERVER_H_
