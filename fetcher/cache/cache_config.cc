#include "fetcher/cache/cache_config.h"

#include <cctype>
#include <limits>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull {
namespace {

absl::Status KeyError(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("config: cache.{}: {}", key, what));
}

absl::StatusOr<uint64_t> PositiveInteger(const toml::node& node, std::string_view key) {
  const auto* v = node.as_integer();
  if (v == nullptr) return KeyError(key, "want a positive integer");
  if (v->get() <= 0) return KeyError(key, fmt::format("must be positive, got {}", v->get()));
  return static_cast<uint64_t>(v->get());
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && text[i] == ' ') ++i;
  size_t digits_start = i;
  uint64_t value = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return absl::InvalidArgumentError(fmt::format("byte size \"{}\" overflows", text));
    }
    value = value * 10 + digit;
  }
  if (i == digits_start) {
    return absl::InvalidArgumentError(
        fmt::format("byte size \"{}\": want a number with an optional unit (e.g. 512MiB)", text));
  }
  while (i < text.size() && text[i] == ' ') ++i;
  std::string unit;
  for (; i < text.size(); ++i) unit += static_cast<char>(std::tolower(text[i]));
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    shift = 30;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    shift = 40;
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "byte size \"{}\": unknown unit \"{}\" (want B, KiB, MiB, GiB or TiB)", text, unit));
  }
  if (shift > 0 && value > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return absl::InvalidArgumentError(fmt::format("byte size \"{}\" overflows", text));
  }
  return value << shift;
}

absl::StatusOr<CacheConfig> ParseCacheConfig(const toml::table& section) {
  CacheConfig config;
  for (const auto& [key_node, node] : section) {
    std::string_view key = key_node.str();
    if (key == "dir") {
      const auto* v = node.as_string();
      if (v == nullptr) return KeyError(key, "want a string (a directory path)");
      if (v->get().empty()) return KeyError(key, "must not be empty");
      config.dir = v->get();
    } else if (key == "max_bytes") {
      if (const auto* s = node.as_string()) {
        auto size = ParseByteSize(s->get());
        if (!size.ok()) return KeyError(key, std::string(size.status().message()));
        if (*size == 0) return KeyError(key, "must be positive");
        config.max_bytes = *size;
      } else {
        auto size = PositiveInteger(node, key);
        if (!size.ok()) return KeyError(key, "want a positive integer or a size like \"10GiB\"");
        config.max_bytes = *size;
      }
    } else if (key == "max_open_files") {
      auto n = PositiveInteger(node, key);
      if (!n.ok()) return n.status();
      config.max_open_files = static_cast<size_t>(*n);
    } else {
      return KeyError(key, "unknown key (known: dir, max_bytes, max_open_files)");
    }
  }
  return config;
}

}  // namespace lazypull
