#include "server/remote/remote_config.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace lazypull::remote {
namespace {

absl::Status KeyError(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("remote.", std::string(key), ": ", std::string(what)));
}

absl::StatusOr<int64_t> PositiveInt(const toml::node& node, std::string_view key) {
  std::optional<int64_t> v = node.value<int64_t>();
  if (!v.has_value() || !node.is_integer()) return KeyError(key, "must be an integer");
  if (*v <= 0) return KeyError(key, "must be positive");
  return *v;
}

}  // namespace

absl::StatusOr<RemoteConfig> ParseRemoteConfig(const toml::table& section) {
  RemoteConfig config;
  for (const auto& [k, node] : section) {
    std::string_view key = k.str();
    if (key == "enabled" || key == "fail_on_restore_error" || key == "preload_layers") {
      if (!node.is_boolean()) return KeyError(key, "must be a boolean");
      bool& field = key == "enabled"                 ? config.enabled
                    : key == "fail_on_restore_error" ? config.fail_on_restore_error
                                                     : config.preload_layers;
      field = *node.value<bool>();
    } else if (key == "restore_concurrency") {
      absl::StatusOr<int64_t> v = PositiveInt(node, key);
      if (!v.ok()) return v.status();
      config.restore_concurrency = static_cast<size_t>(*v);
    } else if (key == "status_interval_ms") {
      absl::StatusOr<int64_t> v = PositiveInt(node, key);
      if (!v.ok()) return v.status();
      config.status_interval = std::chrono::milliseconds(*v);
    } else if (key == "preload_lifetime_ms") {
      absl::StatusOr<int64_t> v = PositiveInt(node, key);
      if (!v.ok()) return v.status();
      config.preload_lifetime = std::chrono::milliseconds(*v);
    } else if (key == "manifest_cache_ms") {
      absl::StatusOr<int64_t> v = PositiveInt(node, key);
      if (!v.ok()) return v.status();
      config.manifest_cache = std::chrono::milliseconds(*v);
    } else {
      return KeyError(key, "unknown key");
    }
  }
  return config;
}

}  // namespace lazypull::remote
