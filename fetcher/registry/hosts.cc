#include "fetcher/registry/hosts.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "fetcher/registry/reference.h"
#include "fmt/format.h"

namespace lazypull::registry {
namespace {

namespace fs = std::filesystem;

std::string DefaultUpstreamHost(std::string_view name) {
  if (name == "docker.io") return "registry-1.docker.io";
  return std::string(name);
}

RegistryHost DefaultUpstream(const RegistryConfig& config, std::string_view name) {
  RegistryHost h;
  h.host = DefaultUpstreamHost(name);
  std::string n(name);
  if (config.plain_http.count(n) || (config.plain_http_localhost && IsLocalhost(name))) {
    h.scheme = "http";
  }
  if (config.skip_verify.count(n)) h.tls.skip_verify = true;
  return h;
}

struct ParsedUrl {
  std::string scheme, host, path;
};

absl::StatusOr<ParsedUrl> ParseUrl(std::string_view url) {
  ParsedUrl u;
  auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    // containerd accepts a bare host and assumes https.
    u.scheme = "https";
  } else {
    u.scheme = std::string(url.substr(0, sep));
    url = url.substr(sep + 3);
  }
  if (u.scheme != "http" && u.scheme != "https") {
    return absl::InvalidArgumentError(fmt::format("unsupported URL scheme \"{}\"", u.scheme));
  }
  auto slash = url.find('/');
  u.host = std::string(url.substr(0, slash));
  if (slash != std::string_view::npos) u.path = std::string(url.substr(slash));
  if (u.host.empty()) return absl::InvalidArgumentError("URL has no host");
  while (!u.path.empty() && u.path.back() == '/') u.path.pop_back();
  return u;
}

std::string ResolvePath(const std::string& dir, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return dir + "/" + p;
}

// Applies the keys shared by the top level and [host."URL"] tables.
absl::Status ApplyHostKeys(const toml::table& t, const std::string& where, const std::string& dir,
                           RegistryHost* h, bool* override_path) {
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    std::string at = where + "." + key;
    if (key == "capabilities") {
      const toml::array* a = v.as_array();
      if (a == nullptr) return absl::InvalidArgumentError(at + ": must be an array");
      h->capabilities = 0;
      for (const auto& e : *a) {
        auto s = e.value<std::string>();
        if (!s) return absl::InvalidArgumentError(at + ": entries must be strings");
        if (*s == "pull") {
          h->capabilities |= kCapPull;
        } else if (*s == "resolve") {
          h->capabilities |= kCapResolve;
        } else if (*s == "push") {
          h->capabilities |= kCapPush;
        } else {
          return absl::InvalidArgumentError(fmt::format("{}: unknown capability \"{}\"", at, *s));
        }
      }
    } else if (key == "skip_verify") {
      if (!v.is_boolean()) return absl::InvalidArgumentError(at + ": must be a boolean");
      h->tls.skip_verify = *v.value<bool>();
    } else if (key == "override_path") {
      if (!v.is_boolean()) return absl::InvalidArgumentError(at + ": must be a boolean");
      *override_path = *v.value<bool>();
    } else if (key == "ca") {
      if (auto s = v.value<std::string>(); v.is_string()) {
        h->tls.ca_files.push_back(ResolvePath(dir, *s));
      } else if (const toml::array* a = v.as_array()) {
        for (const auto& e : *a) {
          auto es = e.value<std::string>();
          if (!e.is_string()) return absl::InvalidArgumentError(at + ": entries must be strings");
          h->tls.ca_files.push_back(ResolvePath(dir, *es));
        }
      } else {
        return absl::InvalidArgumentError(at + ": must be a string or array of strings");
      }
    } else if (key == "client") {
      if (auto s = v.value<std::string>(); v.is_string()) {
        h->tls.client_pairs.emplace_back(ResolvePath(dir, *s), "");
      } else if (const toml::array* a = v.as_array()) {
        for (const auto& e : *a) {
          if (e.is_string()) {
            h->tls.client_pairs.emplace_back(ResolvePath(dir, *e.value<std::string>()), "");
          } else if (const toml::array* pair = e.as_array(); pair != nullptr && pair->size() == 2 &&
                                                             (*pair)[0].is_string() &&
                                                             (*pair)[1].is_string()) {
            h->tls.client_pairs.emplace_back(ResolvePath(dir, *(*pair)[0].value<std::string>()),
                                             ResolvePath(dir, *(*pair)[1].value<std::string>()));
          } else {
            return absl::InvalidArgumentError(at + ": entries must be paths or [cert, key]");
          }
        }
      } else {
        return absl::InvalidArgumentError(at + ": must be a path or array");
      }
    } else if (key == "header") {
      const toml::table* ht = v.as_table();
      if (ht == nullptr) return absl::InvalidArgumentError(at + ": must be a table");
      for (const auto& [hk, hv] : *ht) {
        if (hv.is_string()) {
          h->headers.emplace_back(std::string(hk.str()), *hv.value<std::string>());
        } else if (const toml::array* a = hv.as_array()) {
          for (const auto& e : *a) {
            if (!e.is_string()) return absl::InvalidArgumentError(at + ": values must be strings");
            h->headers.emplace_back(std::string(hk.str()), *e.value<std::string>());
          }
        } else {
          return absl::InvalidArgumentError(at + ": values must be strings");
        }
      }
    } else if (key == "server" || key == "host") {
      // Handled by the caller (top level only).
    } else {
      return absl::InvalidArgumentError(at + ": unknown key");
    }
  }
  return absl::OkStatus();
}

absl::Status SetUrl(std::string_view url, bool override_path, const std::string& where,
                    RegistryHost* h) {
  auto u = ParseUrl(url);
  if (!u.ok()) return absl::InvalidArgumentError(where + ": " + std::string(u.status().message()));
  h->scheme = u->scheme;
  h->host = u->host;
  if (u->path.empty()) {
    h->path = "/v2";
  } else if (override_path) {
    h->path = u->path;
  } else {
    h->path = u->path;
    if (!h->path.ends_with("/v2")) h->path += "/v2";
  }
  return absl::OkStatus();
}

std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string RegistryHost::ApiRoot() const { return scheme + "://" + host + path; }

absl::StatusOr<std::vector<RegistryHost>> ParseHostsToml(const RegistryConfig& config,
                                                         std::string_view name,
                                                         std::string_view toml_text,
                                                         const std::string& dir) {
  std::string file = dir + "/hosts.toml";
  toml::table doc;
  try {
    doc = toml::parse(toml_text, file);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", file, e.what()));
  }
  RegistryHost upstream = DefaultUpstream(config, name);
  bool override_path = false;
  if (auto st = ApplyHostKeys(doc, file, dir, &upstream, &override_path); !st.ok()) return st;
  if (auto server = doc["server"]; server) {
    auto s = server.value<std::string>();
    if (!s) return absl::InvalidArgumentError(file + ": server must be a string");
    if (auto st = SetUrl(*s, override_path, file + ".server", &upstream); !st.ok()) return st;
  }
  // toml++ tables are sorted by key; containerd tries mirrors in file order.
  std::vector<std::pair<toml::source_position, RegistryHost>> mirrors;
  if (auto hosts = doc["host"]; hosts) {
    const toml::table* ht = hosts.as_table();
    if (ht == nullptr) return absl::InvalidArgumentError(file + ": host must be a table");
    for (const auto& [url, node] : *ht) {
      std::string where = fmt::format("{}: host.\"{}\"", file, url.str());
      const toml::table* t = node.as_table();
      if (t == nullptr) return absl::InvalidArgumentError(where + ": must be a table");
      RegistryHost m;
      m.mirror = true;
      bool op = false;
      if (auto st = ApplyHostKeys(*t, where, dir, &m, &op); !st.ok()) return st;
      if (auto st = SetUrl(url.str(), op, where, &m); !st.ok()) return st;
      mirrors.emplace_back(t->source().begin, std::move(m));
    }
  }
  std::stable_sort(mirrors.begin(), mirrors.end(), [](const auto& a, const auto& b) {
    return a.first.line != b.first.line ? a.first.line < b.first.line
                                        : a.first.column < b.first.column;
  });
  std::vector<RegistryHost> out;
  for (auto& [pos, m] : mirrors) out.push_back(std::move(m));
  out.push_back(std::move(upstream));
  return out;
}

absl::StatusOr<std::vector<RegistryHost>> ResolveRegistryHosts(const RegistryConfig& config,
                                                               std::string_view name) {
  if (!config.config_path.empty()) {
    for (const std::string& sub : {std::string(name), std::string("_default")}) {
      std::string dir = config.config_path + "/" + sub;
      if (auto text = ReadWholeFile(dir + "/hosts.toml")) {
        return ParseHostsToml(config, name, *text, dir);
      }
      if (sub != name) continue;
      // Legacy docker certs.d layout: *.crt are CAs, *.cert + *.key client pairs.
      std::error_code ec;
      if (!fs::is_directory(dir, ec)) continue;
      RegistryHost h = DefaultUpstream(config, name);
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(dir, ec)) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        if (f.ends_with(".crt")) h.tls.ca_files.push_back(f);
        if (f.ends_with(".cert")) {
          std::string key = f.substr(0, f.size() - 5) + ".key";
          h.tls.client_pairs.emplace_back(f, fs::exists(key, ec) ? key : "");
        }
      }
      return std::vector<RegistryHost>{std::move(h)};
    }
  }
  return std::vector<RegistryHost>{DefaultUpstream(config, name)};
}

}  // namespace lazypull::registry
