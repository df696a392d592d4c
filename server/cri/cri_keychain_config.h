// CriKeychainConfig: the `[cri_keychain]` TOML section — the same names as
// stargz-snapshotter's, so a node can switch snapshotters without rewriting its config.
//
//   [cri_keychain]
//   enable_keychain = false                                # true: serve runtime.v1.ImageService
//   image_service_path = "/run/containerd/containerd.sock" # the CRI it forwards to (a path or
//                                                          # "unix:///path")
//   credential_ttl_sec = 86400                             # lazypull only: how long the
//                                                          # AuthConfig of a PullImage is kept
//
// Value type; thread-compatible.
#ifndef LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_CONFIG_H_
#define LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_CONFIG_H_

#include <toml++/toml.h>

#include <chrono>
#include <string>

#include "absl/status/statusor.h"

namespace lazypull::cri {

inline constexpr char kCriKeychainSection[] = "cri_keychain";

struct CriKeychainConfig {
  bool enable_keychain = false;
  std::string image_service_path = "/run/containerd/containerd.sock";
  std::chrono::seconds credential_ttl{86400};

  // The gRPC target for image_service_path: "unix:<path>", or the value as given when it
  // already names a scheme ("unix:///run/x.sock").
  std::string BackendTarget() const;
};

// Parses the `[cri_keychain]` table itself. InvalidArgument naming `cri_keychain.<key>` for
// unknown keys, wrong types, an empty path or a non-positive TTL.
absl::StatusOr<CriKeychainConfig> ParseCriKeychainConfig(const toml::table& section);

// The section of the daemon's TOML document (defaults when it has none).
absl::StatusOr<CriKeychainConfig> CriKeychainConfigFromToml(const toml::table& doc);

}  // namespace lazypull::cri

#endif  // LAZYPULL_SERVER_CRI_CRI_KEYCHAIN_CONFIG_H_
