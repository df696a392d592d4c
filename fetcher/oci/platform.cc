#include "fetcher/oci/platform.h"

#include <sys/utsname.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "fmt/format.h"

namespace lazypull::oci {

std::string Platform::ToString() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

Platform NormalizePlatform(Platform p) {
  p.os = absl::AsciiStrToLower(p.os);
  p.architecture = absl::AsciiStrToLower(p.architecture);
  p.variant = absl::AsciiStrToLower(p.variant);
  if (p.os == "macos") p.os = "darwin";
  const std::string& a = p.architecture;
  if (a == "i386") {
    p.architecture = "386";
    p.variant.clear();
  } else if (a == "x86_64" || a == "x86-64" || a == "amd64") {
    p.architecture = "amd64";
    if (p.variant == "v1") p.variant.clear();
  } else if (a == "aarch64" || a == "arm64") {
    p.architecture = "arm64";
    if (p.variant == "8" || p.variant == "v8") p.variant.clear();
  } else if (a == "armhf") {
    p.architecture = "arm";
    p.variant = "v7";
  } else if (a == "armel") {
    p.architecture = "arm";
    p.variant = "v6";
  } else if (a == "arm") {
    if (p.variant.empty() || p.variant == "7") p.variant = "v7";
    if (p.variant == "5" || p.variant == "6" || p.variant == "8") p.variant = "v" + p.variant;
  }
  return p;
}

absl::StatusOr<Platform> ParsePlatform(std::string_view text) {
  std::vector<std::string> parts = absl::StrSplit(absl::string_view(text.data(), text.size()), '/');
  if (parts.empty() || parts.size() > 3 || parts[0].empty()) {
    return absl::InvalidArgumentError(
        fmt::format("invalid platform \"{}\": want os[/arch[/variant]]", text));
  }
  for (const auto& p : parts) {
    if (p.empty()) {
      return absl::InvalidArgumentError(fmt::format("invalid platform \"{}\": empty part", text));
    }
  }
  Platform p;
  p.os = parts[0];
  p.architecture = parts.size() > 1 ? parts[1] : HostPlatform().architecture;
  if (parts.size() > 2) p.variant = parts[2];
  return NormalizePlatform(p);
}

Platform HostPlatform() {
  Platform p;
  p.os = "linux";
  struct utsname u;
  if (uname(&u) == 0) {
    std::string m = u.machine;
    if (m == "armv7l" || m == "armv7") {
      p.architecture = "arm";
      p.variant = "v7";
    } else if (m == "armv6l") {
      p.architecture = "arm";
      p.variant = "v6";
    } else if (m == "i686" || m == "i586" || m == "i386") {
      p.architecture = "386";
    } else {
      p.architecture = m;
    }
  } else {
    p.architecture = "amd64";
  }
  return NormalizePlatform(p);
}

bool PlatformMatches(const Platform& want_in, const Platform& have_in) {
  Platform want = NormalizePlatform(want_in);
  Platform have = NormalizePlatform(have_in);
  if (want.os != have.os || want.architecture != have.architecture) return false;
  if (want.variant.empty()) return true;
  return want.variant == have.variant;
}

absl::StatusOr<Platform> PlatformFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("platform: not a JSON object");
  Platform p;
  auto str = [&](const char* key, std::string* out, bool required) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end()) {
      if (required) return absl::InvalidArgumentError(fmt::format("platform: missing \"{}\"", key));
      return absl::OkStatus();
    }
    if (!it->is_string()) {
      return absl::InvalidArgumentError(fmt::format("platform: \"{}\" is not a string", key));
    }
    *out = it->get<std::string>();
    return absl::OkStatus();
  };
  if (auto st = str("os", &p.os, true); !st.ok()) return st;
  if (auto st = str("architecture", &p.architecture, true); !st.ok()) return st;
  if (auto st = str("variant", &p.variant, false); !st.ok()) return st;
  if (auto st = str("os.version", &p.os_version, false); !st.ok()) return st;
  if (auto it = j.find("os.features"); it != j.end()) {
    if (!it->is_array()) return absl::InvalidArgumentError("platform: os.features not an array");
    for (const auto& f : *it) {
      if (!f.is_string()) return absl::InvalidArgumentError("platform: os.features entry");
      p.os_features.push_back(f.get<std::string>());
    }
  }
  return p;
}

nlohmann::json PlatformToJson(const Platform& p) {
  nlohmann::json j = {{"os", p.os}, {"architecture", p.architecture}};
  if (!p.variant.empty()) j["variant"] = p.variant;
  if (!p.os_version.empty()) j["os.version"] = p.os_version;
  if (!p.os_features.empty()) j["os.features"] = p.os_features;
  return j;
}

}  // namespace lazypull::oci
