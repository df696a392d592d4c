#include "server/cri/cri_keychain.h"

#include <string.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "fetcher/registry/reference.h"

namespace lazypull::cri {
namespace {

// Docker Hub answers under several names; kubelet and docker key its credentials by
// "https://index.docker.io/v1/".
std::string_view CanonicalHost(std::string_view host) {
  if (host == "index.docker.io" || host == "registry-1.docker.io") return "docker.io";
  return host;
}

std::string EntryKey(std::string_view registry, std::string_view repository) {
  std::string key(CanonicalHost(registry));
  key += '/';
  key += repository;
  return key;
}

// Host part of a URL the way Go's url.Parse fills URL.Host: "scheme://[user@]host[:port]/..."
// → "host[:port]"; no "//" → "" (no host).
std::string UrlHost(std::string_view url) {
  size_t p = url.find("//");
  if (p == std::string_view::npos) return "";
  std::string_view rest = url.substr(p + 2);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  return std::string(rest);
}

void WipeString(std::string& s) {
  if (!s.empty()) explicit_bzero(s.data(), s.size());
  s.clear();
}

}  // namespace

absl::StatusOr<std::optional<registry::HostCredentials>> CredentialsFromCriAuth(
    const CriAuth& auth, std::optional<std::string>* server_host) {
  server_host->reset();
  if (!auth.server_address.empty()) *server_host = UrlHost(auth.server_address);
  registry::HostCredentials c;
  if (!auth.username.empty()) {
    c.username = auth.username;
    c.password = auth.password;
  } else if (!auth.identity_token.empty()) {
    c.identity_token = auth.identity_token;
  } else if (!auth.auth.empty()) {
    std::string decoded;
    if (!absl::Base64Unescape(auth.auth, &decoded) || decoded.find(':') == std::string::npos) {
      WipeString(decoded);
      return absl::InvalidArgumentError("CRI AuthConfig.auth is not base64 of \"user:password\"");
    }
    size_t colon = decoded.find(':');
    c.username = decoded.substr(0, colon);
    c.password = decoded.substr(colon + 1);
    // Like containerd: docker's encoder may leave NUL padding.
    while (!c.password.empty() && c.password.back() == '\0') c.password.pop_back();
    while (!c.password.empty() && c.password.front() == '\0') c.password.erase(0, 1);
    WipeString(decoded);
  } else if (!auth.registry_token.empty()) {
    c.registry_token = auth.registry_token;
  } else {
    return std::optional<registry::HostCredentials>();
  }
  return std::optional<registry::HostCredentials>(std::move(c));
}

CriKeychain::CriKeychain(std::chrono::seconds ttl, Clock clock)
    : ttl_(ttl), clock_(std::move(clock)) {}

CriKeychain::~CriKeychain() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [key, e] : entries_) {
    Wipe(e.current);
    if (e.previous) Wipe(*e.previous);
  }
}

void CriKeychain::Wipe(Credentials& c) {
  WipeString(c.creds.username);
  WipeString(c.creds.password);
  WipeString(c.creds.identity_token);
  WipeString(c.creds.registry_token);
}

absl::StatusOr<CriKeychain::Ticket> CriKeychain::Remember(std::string_view image_ref,
                                                          const CriAuth& auth) {
  absl::StatusOr<registry::Reference> ref = registry::ParseReference(image_ref);
  if (!ref.ok()) return ref.status();
  Credentials fresh;
  absl::StatusOr<std::optional<registry::HostCredentials>> creds =
      CredentialsFromCriAuth(auth, &fresh.server_host);
  if (!creds.ok() || !creds->has_value()) return Ticket{0};
  fresh.creds = std::move(**creds);

  const auto now = clock_();
  std::lock_guard<std::mutex> l(mu_);
  DropExpiredLocked(now);
  const std::string key = EntryKey(ref->host, ref->repository);
  const Ticket ticket = next_ticket_++;
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    Entry e;
    e.current = std::move(fresh);
    e.expires = now + ttl_;
    e.ticket = ticket;
    entries_.emplace(key, std::move(e));
  } else {
    Entry& e = it->second;
    ticket_keys_.erase(e.ticket);
    if (e.previous) Wipe(*e.previous);
    e.previous = std::move(e.current);
    e.previous_expires = e.expires;
    e.current = std::move(fresh);
    e.expires = now + ttl_;
    e.ticket = ticket;
  }
  ticket_keys_[ticket] = key;
  return ticket;
}

void CriKeychain::Forget(Ticket ticket) {
  if (ticket == 0) return;
  const auto now = clock_();
  std::lock_guard<std::mutex> l(mu_);
  auto t = ticket_keys_.find(ticket);
  if (t == ticket_keys_.end()) return;
  auto it = entries_.find(t->second);
  ticket_keys_.erase(t);
  if (it == entries_.end() || it->second.ticket != ticket) return;
  Entry& e = it->second;
  Wipe(e.current);
  if (e.previous && e.previous_expires > now) {
    e.current = std::move(*e.previous);
    e.expires = e.previous_expires;
    e.previous.reset();
    e.ticket = 0;  // the restored entry's own ticket was retired when it was replaced
  } else {
    if (e.previous) Wipe(*e.previous);
    entries_.erase(it);
  }
}

std::optional<registry::HostCredentials> CriKeychain::Find(std::string_view registry,
                                                           std::string_view repository,
                                                           std::string_view host) const {
  const auto now = clock_();
  std::lock_guard<std::mutex> l(mu_);
  DropExpiredLocked(now);
  auto it = entries_.find(EntryKey(registry, repository));
  if (it == entries_.end()) return std::nullopt;
  const Credentials& c = it->second.current;
  if (c.server_host.has_value() && CanonicalHost(*c.server_host) != CanonicalHost(host)) {
    return std::nullopt;
  }
  return c.creds;
}

size_t CriKeychain::size() const {
  const auto now = clock_();
  std::lock_guard<std::mutex> l(mu_);
  DropExpiredLocked(now);
  return entries_.size();
}

void CriKeychain::DropExpiredLocked(std::chrono::steady_clock::time_point now) const {
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (e.previous && e.previous_expires <= now) {
      Wipe(*e.previous);
      e.previous.reset();
    }
    if (e.expires <= now) {
      ticket_keys_.erase(e.ticket);
      Wipe(e.current);
      if (e.previous) Wipe(*e.previous);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace lazypull::cri
