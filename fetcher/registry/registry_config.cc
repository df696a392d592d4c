#include "fetcher/registry/registry_config.h"

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "fmt/format.h"

namespace lazypull::registry {
namespace {

absl::Status Bad(const std::string& key, const std::string& why) {
  return absl::InvalidArgumentError(fmt::format("[registry] {}: {}", key, why));
}

absl::Status GetString(const toml::node& n, const std::string& key, std::string* out) {
  auto v = n.value<std::string>();
  if (!n.is_string() || !v) return Bad(key, "must be a string");
  *out = *v;
  return absl::OkStatus();
}

absl::Status GetMillis(const toml::node& n, const std::string& key,
                       std::chrono::milliseconds* out) {
  if (!n.is_integer()) return Bad(key, "must be an integer (milliseconds)");
  int64_t v = *n.value<int64_t>();
  if (v < 0) return Bad(key, "must not be negative");
  *out = std::chrono::milliseconds(v);
  return absl::OkStatus();
}

absl::Status GetHostSet(const toml::node& n, const std::string& key, std::set<std::string>* out) {
  const toml::array* arr = n.as_array();
  if (arr == nullptr) return Bad(key, "must be an array of host[:port] strings");
  for (const auto& e : *arr) {
    auto s = e.value<std::string>();
    if (!e.is_string() || !s || s->empty()) return Bad(key, "entries must be non-empty strings");
    out->insert(*s);
  }
  return absl::OkStatus();
}

absl::Status ParseAuth(const std::string& host, const toml::table& t, HostCredentials* c) {
  std::string where = fmt::format("auths.\"{}\"", host);
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    std::string value;
    if (auto st = GetString(v, where + "." + key, &value); !st.ok()) return st;
    if (key == "username") {
      c->username = value;
    } else if (key == "password") {
      c->password = value;
    } else if (key == "identitytoken" || key == "identity_token") {
      c->identity_token = value;
    } else if (key == "auth") {
      std::string decoded;
      if (!absl::Base64Unescape(value, &decoded) || decoded.find(':') == std::string::npos) {
        return Bad(where + ".auth", "not base64 of \"user:password\"");
      }
      c->username = decoded.substr(0, decoded.find(':'));
      c->password = decoded.substr(decoded.find(':') + 1);
    } else {
      return Bad(where + "." + key, "unknown key");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RegistryConfig> ParseRegistryConfig(const toml::table& registry) {
  RegistryConfig c;
  for (const auto& [k, v] : registry) {
    std::string key(k.str());
    absl::Status st;
    if (key == "config_path") {
      st = GetString(v, key, &c.config_path);
    } else if (key == "docker_config") {
      st = GetString(v, key, &c.docker_config);
    } else if (key == "plain_http_localhost") {
      if (!v.is_boolean()) return Bad(key, "must be a boolean");
      c.plain_http_localhost = *v.value<bool>();
    } else if (key == "multi_range") {
      if (!v.is_boolean()) return Bad(key, "must be a boolean");
      c.multi_range = *v.value<bool>();
    } else if (key == "plain_http") {
      st = GetHostSet(v, key, &c.plain_http);
    } else if (key == "skip_verify") {
      st = GetHostSet(v, key, &c.skip_verify);
    } else if (key == "connect_timeout_ms") {
      st = GetMillis(v, key, &c.connect_timeout);
    } else if (key == "request_timeout_ms") {
      st = GetMillis(v, key, &c.request_timeout);
    } else if (key == "total_timeout_ms") {
      st = GetMillis(v, key, &c.total_timeout);
    } else if (key == "low_speed_time_ms") {
      st = GetMillis(v, key, &c.low_speed_time);
    } else if (key == "low_speed_bytes") {
      if (!v.is_integer() || *v.value<int64_t>() < 0)
        return Bad(key, "must be a non-negative integer");
      c.low_speed_bytes = static_cast<uint64_t>(*v.value<int64_t>());
    } else if (key == "initial_backoff_ms") {
      st = GetMillis(v, key, &c.initial_backoff);
    } else if (key == "max_backoff_ms") {
      st = GetMillis(v, key, &c.max_backoff);
    } else if (key == "max_retries" || key == "max_concurrency_per_host" ||
               key == "merge_gap_bytes" || key == "upload_chunk_bytes") {
      if (!v.is_integer() || *v.value<int64_t>() < 0) {
        return Bad(key, "must be a non-negative integer");
      }
      int64_t n = *v.value<int64_t>();
      if (key == "max_retries") c.max_retries = static_cast<int>(n);
      if (key == "max_concurrency_per_host") {
        if (n == 0) return Bad(key, "must be at least 1");
        c.max_concurrency_per_host = static_cast<int>(n);
      }
      if (key == "merge_gap_bytes") c.merge_gap_bytes = static_cast<uint64_t>(n);
      if (key == "upload_chunk_bytes") {
        if (n < 1024) return Bad(key, "must be at least 1024");
        c.upload_chunk_bytes = static_cast<uint64_t>(n);
      }
    } else if (key == "user_agent") {
      st = GetString(v, key, &c.user_agent);
    } else if (key == "auths") {
      const toml::table* auths = v.as_table();
      if (auths == nullptr) return Bad(key, "must be a table of host tables");
      for (const auto& [host, entry] : *auths) {
        const toml::table* t = entry.as_table();
        std::string h(host.str());
        if (t == nullptr) return Bad(fmt::format("auths.\"{}\"", h), "must be a table");
        HostCredentials creds;
        if (auto s = ParseAuth(h, *t, &creds); !s.ok()) return s;
        c.auths[h] = std::move(creds);
      }
    } else {
      return Bad(key, "unknown key");
    }
    if (!st.ok()) return st;
  }
  return c;
}

}  // namespace lazypull::registry
