#include "fetcher/registry/credentials.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::registry {
namespace {

std::string NormalizeHostKey(std::string_view key) {
  if (auto p = key.find("://"); p != std::string_view::npos) key = key.substr(p + 3);
  if (auto p = key.find('/'); p != std::string_view::npos) key = key.substr(0, p);
  if (key == "index.docker.io" || key == "registry-1.docker.io") return "docker.io";
  return std::string(key);
}

}  // namespace

absl::StatusOr<std::map<std::string, HostCredentials>> ParseDockerConfig(std::string_view text,
                                                                         std::string_view file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(fmt::format("docker config {}: invalid JSON", file));
  }
  std::map<std::string, HostCredentials> out;
  if (!j.is_object()) {
    return absl::InvalidArgumentError(fmt::format("docker config {}: not an object", file));
  }
  auto auths = j.find("auths");
  if (auths == j.end()) return out;
  if (!auths->is_object()) {
    return absl::InvalidArgumentError(fmt::format("docker config {}: auths not an object", file));
  }
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    const auto& e = it.value();
    if (!e.is_object()) continue;
    HostCredentials c;
    if (auto a = e.find("auth"); a != e.end() && a->is_string() && !a->get<std::string>().empty()) {
      std::string decoded;
      if (!absl::Base64Unescape(a->get<std::string>(), &decoded) ||
          decoded.find(':') == std::string::npos) {
        return absl::InvalidArgumentError(fmt::format(
            "docker config {}: auths.\"{}\".auth is not base64 of user:password", file, it.key()));
      }
      c.username = decoded.substr(0, decoded.find(':'));
      c.password = decoded.substr(decoded.find(':') + 1);
    }
    if (auto u = e.find("username"); u != e.end() && u->is_string() && c.username.empty()) {
      c.username = u->get<std::string>();
    }
    if (auto p = e.find("password"); p != e.end() && p->is_string() && c.password.empty()) {
      c.password = p->get<std::string>();
    }
    if (auto t = e.find("identitytoken"); t != e.end() && t->is_string()) {
      c.identity_token = t->get<std::string>();
    }
    if (!c.empty()) out[NormalizeHostKey(it.key())] = std::move(c);
  }
  return out;
}

CredentialStore::CredentialStore(std::map<std::string, HostCredentials> per_host,
                                 std::string docker_config,
                                 std::shared_ptr<const CredentialProvider> provider)
    : provider_(std::move(provider)),
      per_host_(std::move(per_host)),
      docker_config_(std::move(docker_config)) {}

absl::StatusOr<HostCredentials> CredentialStore::Lookup(std::string_view host,
                                                        std::string_view registry,
                                                        std::string_view repository) const {
  if (provider_ != nullptr) {
    if (std::optional<HostCredentials> c = provider_->Find(registry, repository, host)) return *c;
  }
  return Lookup(host);
}

absl::StatusOr<HostCredentials> CredentialStore::Lookup(std::string_view host) const {
  std::string key = NormalizeHostKey(host);
  for (const auto& [k, v] : per_host_) {
    if (NormalizeHostKey(k) == key) return v;
  }
  if (docker_config_.empty()) return HostCredentials{};
  struct stat st;
  if (::stat(docker_config_.c_str(), &st) != 0) return HostCredentials{};
  int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  std::lock_guard<std::mutex> l(mu_);
  if (mtime_ns != cached_mtime_ns_ || st.st_size != cached_size_) {
    std::ifstream in(docker_config_, std::ios::binary);
    if (!in) return HostCredentials{};
    std::stringstream ss;
    ss << in.rdbuf();
    auto parsed = ParseDockerConfig(ss.str(), docker_config_);
    if (!parsed.ok()) return parsed.status();
    cached_ = std::move(*parsed);
    cached_mtime_ns_ = mtime_ns;
    cached_size_ = st.st_size;
  }
  auto it = cached_.find(key);
  if (it == cached_.end()) return HostCredentials{};
  return it->second;
}

}  // namespace lazypull::registry
