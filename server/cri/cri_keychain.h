// CriKeychain: registry credentials learnt from CRI PullImage requests (kubelet puts the pod's
// image pull secret into PullImageRequest.auth), kept in memory only — never logged, never
// written to disk — for the pulled image's registry and repository, each entry expiring
// `ttl` after the PullImage that brought it. The remote-snapshot path reads them through
// registry::CredentialProvider, so lazypull can fetch the manifest, TOC and chunks of private
// images that containerd's CRI pulls with credentials it never passes to a snapshotter.
//
// Which credentials an entry yields for a contacted host follows containerd 1.6's CRI
// (pkg/cri/server/image_pull.go ParseAuth), so lazypull authenticates exactly where
// containerd did: an AuthConfig with server_address applies only to that URL's host (Docker
// Hub's aliases index.docker.io / registry-1.docker.io / docker.io are one host); otherwise to
// the registry and its mirrors. username(+password) wins, then identity_token (an OAuth2
// refresh token), then `auth` (base64 "user:password"); lazypull also honours registry_token
// (a ready bearer token), which containerd 1.6 ignores. An AuthConfig with no usable secret is
// not kept, so the static credentials ([registry.auths], docker config) still apply.
//
// Thread-safe. Remember/Forget/Find take one mutex briefly; expired entries are dropped
// lazily.
#ifndef LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_H_
#define LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/registry/credential_provider.h"

namespace lazypull::cri {

// The fields of CRI's AuthConfig (runtime.v1), copied out of the request. All but
// server_address are secrets.
struct CriAuth {
  std::string username;
  std::string password;
  std::string auth;  // base64("user:password")
  std::string server_address;
  std::string identity_token;
  std::string registry_token;
};

class CriKeychain final : public registry::CredentialProvider {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // Identifies one Remember call, for Forget. 0 = nothing was remembered.
  using Ticket = uint64_t;

  // `clock` is injectable for tests.
  explicit CriKeychain(
      std::chrono::seconds ttl, Clock clock = [] { return std::chrono::steady_clock::now(); });
  ~CriKeychain() override;
  CriKeychain(const CriKeychain&) = delete;
  CriKeychain& operator=(const CriKeychain&) = delete;

  // Keeps `auth` for the registry and repository of `image_ref` (as in PullImage's ImageSpec:
  // "busybox", "127.0.0.1:5000/team/app:v1", "...@sha256:..."), replacing what was kept for
  // them. Returns 0 when `auth` carries no usable secret or `auth` is malformed base64 (kept
  // nothing: containerd fails such a pull itself). InvalidArgument when `image_ref` is not an
  // image reference (the message quotes the reference, never a secret).
  absl::StatusOr<Ticket> Remember(std::string_view image_ref, const CriAuth& auth);

  // Undoes Remember(ticket) — called when the PullImage it came with failed, so credentials
  // that did not pull are not kept — if its entry is still the current one for its repository:
  // the entry it replaced comes back (while unexpired), else the repository has none. No-op for
  // 0 and for entries replaced since.
  void Forget(Ticket ticket);

  // registry::CredentialProvider.
  std::optional<registry::HostCredentials> Find(std::string_view registry,
                                                std::string_view repository,
                                                std::string_view host) const override;

  // Number of unexpired entries (tests, status).
  size_t size() const;

 private:
  struct Credentials {
    registry::HostCredentials creds;
    // Host of server_address; nullopt = applies to every host. "" = matches no host (an
    // address without "//", as Go's url.Parse yields no host for it).
    std::optional<std::string> server_host;
  };
  struct Entry {
    Credentials current;
    std::chrono::steady_clock::time_point expires;
    Ticket ticket = 0;
    std::optional<Credentials> previous;  // what Forget(ticket) restores
    std::chrono::steady_clock::time_point previous_expires;
  };

  void DropExpiredLocked(std::chrono::steady_clock::time_point now) const;
  static void Wipe(Credentials& c);

  const std::chrono::seconds ttl_;
  const Clock clock_;
  mutable std::mutex mu_;
  mutable std::map<std::string, Entry> entries_;       // key: "<registry>/<repository>"
  mutable std::map<Ticket, std::string> ticket_keys_;  // live tickets → entry key
  Ticket next_ticket_ = 1;
};

// The credentials containerd 1.6's CRI would use for `auth` (see the class comment), or nullopt
// when it carries none. InvalidArgument when `auth.auth` is not base64 of "user:password".
// `server_host` receives the host of auth.server_address (nullopt when it is empty).
absl::StatusOr<std::optional<registry::HostCredentials>> CredentialsFromCriAuth(
    const CriAuth& auth, std::optional<std::string>* server_host);

}  // namespace lazypull::cri

#endif  // LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_H_
