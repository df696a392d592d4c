#include "server/cri/cri_keychain_config.h"

#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace lazypull::cri {
namespace {

absl::Status KeyError(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(kCriKeychainSection, ".", std::string(key), ": ", std::string(what)));
}

}  // namespace

std::string CriKeychainConfig::BackendTarget() const {
  if (absl::StrContains(image_service_path, "://")) return image_service_path;
  return "unix:" + image_service_path;
}

absl::StatusOr<CriKeychainConfig> ParseCriKeychainConfig(const toml::table& section) {
  CriKeychainConfig config;
  for (const auto& [k, node] : section) {
    std::string_view key = k.str();
    if (key == "enable_keychain") {
      if (!node.is_boolean()) return KeyError(key, "must be a boolean");
      config.enable_keychain = *node.value<bool>();
    } else if (key == "image_service_path") {
      if (!node.is_string()) return KeyError(key, "must be a string");
      config.image_service_path = *node.value<std::string>();
      if (config.image_service_path.empty()) return KeyError(key, "must not be empty");
    } else if (key == "credential_ttl_sec") {
      if (!node.is_integer()) return KeyError(key, "must be an integer");
      int64_t v = *node.value<int64_t>();
      if (v <= 0) return KeyError(key, "must be positive");
      config.credential_ttl = std::chrono::seconds(v);
    } else {
      return KeyError(key, "unknown key");
    }
  }
  return config;
}

absl::StatusOr<CriKeychainConfig> CriKeychainConfigFromToml(const toml::table& doc) {
  const toml::node* node = doc.get(kCriKeychainSection);
  if (node == nullptr) return CriKeychainConfig{};
  const toml::table* section = node->as_table();
  if (section == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(kCriKeychainSection, ": must be a table"));
  }
  return ParseCriKeychainConfig(*section);
}

}  // namespace lazypull::cri
