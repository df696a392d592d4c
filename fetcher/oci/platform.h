// Platform: the os/architecture/variant an image manifest is built for, and matching it
// against the platform lazypull runs on (containerd's normalisation rules).
#ifndef LAZYPULL_FETCHER_OCI_PLATFORM_H_
#define LAZYPULL_FETCHER_OCI_PLATFORM_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lazypull::oci {

// Value type; thread-compatible.
struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64", ...
  std::string variant{};     // "v7", "v8" or empty
  std::string os_version{};
  std::vector<std::string> os_features{};

  // "linux/arm64/v8" (variant omitted when empty).
  std::string ToString() const;
  friend bool operator==(const Platform&, const Platform&) = default;
};

// Parses "os[/arch[/variant]]" (e.g. "linux/amd64", "linux/arm/v7"); errors are InvalidArgument.
// The result is normalised.
absl::StatusOr<Platform> ParsePlatform(std::string_view text);

// The platform of this host (uname), normalised: x86_64 → amd64, aarch64 → arm64, ...
Platform HostPlatform();

// Lower-cases and maps aliases as containerd does (x86_64/x86-64 → amd64, aarch64 → arm64,
// arm64 variant "v8" → "", armhf → arm/v7, armel → arm/v6, i386 → 386).
Platform NormalizePlatform(Platform p);

// True if an image built for `have` runs on `want`: same os and architecture, and the same
// variant unless `want` has none. Both are normalised first.
bool PlatformMatches(const Platform& want, const Platform& have);

// JSON as in the OCI index ("os", "architecture", "variant", "os.version", "os.features").
absl::StatusOr<Platform> PlatformFromJson(const nlohmann::json& j);
nlohmann::json PlatformToJson(const Platform& p);

}  // namespace lazypull::oci

#endif  // LAZYPULL_FETCHER_OCI_PLATFORM_H_
