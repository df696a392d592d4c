#include "server/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lazypull {
namespace {

absl::Status WrongType(absl::string_view source, absl::string_view key, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("config ", source, ": key '", key, "' must be ", want));
}

absl::Status ReadString(const toml::table& t, const std::string& key, absl::string_view source,
                        std::string& out) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return absl::OkStatus();
  std::optional<std::string> v = node->value<std::string>();
  if (!v || !node->is_string()) return WrongType(source, key, "a string");
  out = *v;
  return absl::OkStatus();
}

}  // namespace

absl::string_view MountBackendName(MountBackend backend) {
  switch (backend) {
    case MountBackend::kFuse:
      return "fuse";
    case MountBackend::kErofs:
      return "erofs";
    case MountBackend::kAuto:
      return "auto";
  }
  return "fuse";
}

absl::StatusOr<DaemonConfig> ParseDaemonConfig(absl::string_view text, absl::string_view source) {
  auto table = std::make_shared<toml::table>();
  try {
    *table = toml::parse(std::string_view(text.data(), text.size()), std::string(source));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("config ", source, ":", e.source().begin.line,
                                                   ":", e.source().begin.column, ": ",
                                                   std::string(e.description())));
  }
  DaemonConfig config;
  if (absl::Status s = ReadString(*table, "root", source, config.root); !s.ok()) return s;
  if (absl::Status s = ReadString(*table, "address", source, config.address); !s.ok()) return s;
  if (absl::Status s = ReadString(*table, "log_level", source, config.log_level); !s.ok()) {
    return s;
  }
  if (const toml::node* mode = table->get("socket_mode")) {
    if (mode->is_integer()) {
      config.socket_mode = static_cast<unsigned>(*mode->value<int64_t>());
    } else if (mode->is_string()) {
      std::string text_mode = *mode->value<std::string>();
      unsigned parsed = 0;
      if (text_mode.empty() || text_mode.size() > 4 ||
          text_mode.find_first_not_of("01234567") != std::string::npos) {
        return WrongType(source, "socket_mode", "an octal string like \"0660\"");
      }
      for (char c : text_mode) parsed = parsed * 8 + static_cast<unsigned>(c - '0');
      config.socket_mode = parsed;
    } else {
      return WrongType(source, "socket_mode", "an octal string or an integer");
    }
    if (config.socket_mode > 07777) return WrongType(source, "socket_mode", "at most 07777");
  }
  if (const toml::node* mount = table->get("mount")) {
    if (!mount->is_table()) return WrongType(source, "mount", "a table");
    std::string backend = "auto";
    if (absl::Status s = ReadString(*mount->as_table(), "backend", source, backend); !s.ok()) {
      return s;
    }
    if (backend == "fuse") {
      config.mount_backend = MountBackend::kFuse;
    } else if (backend == "erofs") {
      config.mount_backend = MountBackend::kErofs;
    } else if (backend == "auto") {
      config.mount_backend = MountBackend::kAuto;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "config ", source, ": mount.backend must be fuse, erofs or auto, not '", backend, "'"));
    }
  }
  // --- [metrics] (issue 11) ---
  if (const toml::node* metrics = table->get("metrics")) {
    if (!metrics->is_table()) return WrongType(source, "metrics", "a table");
    for (const auto& [key, value] : *metrics->as_table()) {
      if (key.str() != "address") {
        return absl::InvalidArgumentError(absl::StrCat("config ", source, ": unknown key 'metrics.",
                                                       std::string(key.str()), "'"));
      }
    }
    if (absl::Status s =
            ReadString(*metrics->as_table(), "address", source, config.metrics_address);
        !s.ok()) {
      return WrongType(source, "metrics.address", "a string like \"127.0.0.1:9102\"");
    }
  }
  // --- end [metrics] ---
  // --- [soci] (issue 19) ---
  if (const toml::node* soci = table->get("soci")) {
    if (!soci->is_table()) return WrongType(source, "soci", "a table");
    for (const auto& [key, value] : *soci->as_table()) {
      if (key.str() != "v1") {
        return absl::InvalidArgumentError(
            absl::StrCat("config ", source, ": unknown key 'soci.", std::string(key.str()), "'"));
      }
      if (!value.is_boolean()) return WrongType(source, "soci.v1", "true or false");
      config.soci_v1 = *value.value<bool>();
    }
  }
  // --- end [soci] ---
  if (config.root.empty()) return WrongType(source, "root", "a non-empty path");
  if (config.address.empty()) return WrongType(source, "address", "a non-empty path");
  config.table = std::move(table);
  return config;
}

absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path) {
  if (path.empty()) return DaemonConfig();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseDaemonConfig(buf.str(), path);
}

}  // namespace lazypull
