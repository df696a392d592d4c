#include "mount/mount_config.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include "absl/status/status.h"
#include "fetcher/cache/cache_config.h"
#include "fmt/format.h"

namespace lazypull::mount {
namespace {

absl::Status KeyError(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("mount.{}: {}", key, what));
}

absl::StatusOr<bool> GetBool(const toml::node& node, std::string_view key) {
  if (auto v = node.value<bool>(); v && node.is_boolean()) return *v;
  return KeyError(key, "must be a boolean");
}

absl::StatusOr<uint64_t> GetPositive(const toml::node& node, std::string_view key,
                                     bool allow_zero) {
  if (!node.is_integer()) return KeyError(key, "must be an integer");
  int64_t v = *node.value<int64_t>();
  if (v < 0 || (!allow_zero && v == 0)) return KeyError(key, "must be positive");
  return static_cast<uint64_t>(v);
}

absl::StatusOr<uint64_t> GetSize(const toml::node& node, std::string_view key, bool allow_zero) {
  if (node.is_integer()) return GetPositive(node, key, allow_zero);
  if (!node.is_string()) return KeyError(key, "must be an integer or a size string");
  std::string text = *node.value<std::string>();
  if (allow_zero && (text == "0" || text == "0B")) return 0;
  auto size = ParseByteSize(text);
  if (!size.ok()) return KeyError(key, std::string(size.status().message()));
  return *size;
}

absl::StatusOr<std::chrono::milliseconds> GetDuration(const toml::node& node, std::string_view key,
                                                      bool allow_zero = false) {
  absl::StatusOr<std::chrono::milliseconds> d;
  if (node.is_integer()) {
    d = std::chrono::milliseconds(*node.value<int64_t>());
  } else if (node.is_string()) {
    d = ParseDuration(*node.value<std::string>());
  } else {
    return KeyError(key, "must be a duration string or integer milliseconds");
  }
  if (!d.ok()) return KeyError(key, std::string(d.status().message()));
  if (d->count() < 0 || (!allow_zero && d->count() == 0)) return KeyError(key, "must be positive");
  return *d;
}

}  // namespace

std::string_view BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kFuse:
      return "fuse";
    case BackendKind::kErofs:
      return "erofs";
    case BackendKind::kAuto:
      return "auto";
  }
  return "unknown";
}

std::string_view ErofsAttachName(ErofsAttach attach) {
  switch (attach) {
    case ErofsAttach::kAuto:
      return "auto";
    case ErofsAttach::kFile:
      return "file";
    case ErofsAttach::kLoop:
      return "loop";
  }
  return "unknown";
}

absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr == text.data()) {
    return absl::InvalidArgumentError(fmt::format("bad duration \"{}\"", text));
  }
  std::string_view unit(ptr, text.data() + text.size() - ptr);
  uint64_t ms_per_unit = 0;
  if (unit.empty() || unit == "ms")
    ms_per_unit = 1;
  else if (unit == "s")
    ms_per_unit = 1000;
  else if (unit == "m")
    ms_per_unit = 60'000;
  else if (unit == "h")
    ms_per_unit = 3'600'000;
  else
    return absl::InvalidArgumentError(fmt::format("bad duration unit in \"{}\"", text));
  if (value > (uint64_t{1} << 40) / ms_per_unit) {
    return absl::InvalidArgumentError(fmt::format("duration \"{}\" is too long", text));
  }
  return std::chrono::milliseconds(value * ms_per_unit);
}

absl::StatusOr<MountConfig> ParseMountConfig(const toml::table& section) {
  MountConfig config;
  for (const auto& [key_node, node] : section) {
    std::string_view key = key_node.str();
    if (key == "backend") {
      auto v = node.value<std::string>();
      if (!v || !node.is_string()) return KeyError(key, "must be a string");
      if (*v == "fuse")
        config.backend = BackendKind::kFuse;
      else if (*v == "erofs")
        config.backend = BackendKind::kErofs;
      else if (*v == "auto")
        config.backend = BackendKind::kAuto;
      else
        return KeyError(key, fmt::format("\"{}\" is not fuse, erofs or auto", *v));
    } else if (key == "graduation") {  // --- EROFS backend keys ---
      auto b = GetBool(node, key);
      if (!b.ok()) return b.status();
      config.erofs.graduation = *b;
    } else if (key == "erofs_attach") {
      auto v = node.value<std::string>();
      if (!v || !node.is_string()) return KeyError(key, "must be a string");
      if (*v == "auto")
        config.erofs.attach = ErofsAttach::kAuto;
      else if (*v == "file")
        config.erofs.attach = ErofsAttach::kFile;
      else if (*v == "loop")
        config.erofs.attach = ErofsAttach::kLoop;
      else
        return KeyError(key, fmt::format("\"{}\" is not auto, file or loop", *v));
    } else if (key == "erofs_probe_filesystems") {
      auto v = node.value<std::string>();
      if (!v || !node.is_string() || v->empty()) return KeyError(key, "must be a path");
      config.erofs.probe_filesystems = *v;  // --- end of EROFS backend keys ---
    } else if (key == "fetch_timeout") {
      auto d = GetDuration(node, key);
      if (!d.ok()) return d.status();
      config.reader.fetch_timeout = *d;
    } else if (key == "prefetch") {
      auto b = GetBool(node, key);
      if (!b.ok()) return b.status();
      config.reader.prefetch = *b;
    } else if (key == "elf_prefetch") {
      auto b = GetBool(node, key);
      if (!b.ok()) return b.status();
      config.elf_prefetch = *b;
    } else if (key == "background_fetch") {
      auto b = GetBool(node, key);
      if (!b.ok()) return b.status();
      config.reader.background_fetch = *b;
    } else if (key == "background_concurrency") {
      auto n = GetPositive(node, key, false);
      if (!n.ok()) return n.status();
      config.reader.background_policy.max_in_flight = *n;
    } else if (key == "background_bandwidth") {
      if (node.is_string() && *node.value<std::string>() == "auto") {
        config.reader.background_policy.bandwidth = 0;
        continue;
      }
      auto n = GetSize(node, key, true);
      if (!n.ok()) return n.status();
      config.reader.background_policy.bandwidth =
          *n == 0 ? BackgroundSchedulerOptions::kUnlimited : *n;
    } else if (key == "background_bandwidth_fraction") {
      std::optional<double> f = node.value<double>();
      if (!f || !(node.is_floating_point() || node.is_integer()) || *f <= 0 || *f > 1) {
        return KeyError(key, "must be a number in (0, 1]");
      }
      config.reader.background_policy.bandwidth_fraction = *f;
    } else if (key == "background_silence") {
      auto d = GetDuration(node, key, true);
      if (!d.ok()) return d.status();
      config.reader.background_silence = *d;
    } else if (key == "background_quiet") {
      auto d = GetDuration(node, key, true);
      if (!d.ok()) return d.status();
      config.reader.background_policy.quiet = *d;
    } else if (key == "background_request_size") {
      auto n = GetSize(node, key, false);
      if (!n.ok()) return n.status();
      config.reader.background_request_bytes = *n;
    } else if (key == "file_readahead") {
      auto n = GetSize(node, key, true);
      if (!n.ok()) return n.status();
      config.reader.readahead_bytes = *n;
    } else if (key == "readahead_window") {
      auto n = GetSize(node, key, true);
      if (!n.ok()) return n.status();
      config.reader.readahead_window = *n;
    } else if (key == "readahead_window_max") {
      auto n = GetSize(node, key, false);
      if (!n.ok()) return n.status();
      config.reader.readahead_window_max = *n;
    } else if (key == "directory_batch") {
      auto n = GetSize(node, key, true);
      if (!n.ok()) return n.status();
      config.reader.directory_batch.small_file = *n;
    } else if (key == "max_chunk_in_memory") {
      auto n = GetSize(node, key, false);
      if (!n.ok()) return n.status();
      config.reader.max_chunk_in_memory = *n;
    } else if (key == "max_request_size") {
      auto n = GetSize(node, key, false);
      if (!n.ok()) return n.status();
      config.reader.max_request_bytes = *n;
    } else if (key == "fuse_threads") {
      auto n = GetPositive(node, key, false);
      if (!n.ok()) return n.status();
      config.fuse.max_threads = static_cast<unsigned>(std::min<uint64_t>(*n, 1024));
    } else if (key == "fuse_holder_socket") {
      auto v = node.value<std::string>();
      if (!v || (!v->empty() && (*v)[0] != '/')) {
        return KeyError(key, "must be an absolute path (or \"\" for <root>/fuse-holder.sock)");
      }
      config.fuse.holder_socket = *v;
    } else if (key == "fuse_passthrough") {
      auto b = GetBool(node, key);
      if (!b.ok()) return b.status();
      config.fuse.passthrough = *b;
    } else if (key == "attr_timeout") {
      auto d = GetDuration(node, key);
      if (!d.ok()) return d.status();
      config.fuse.attr_timeout = std::chrono::duration_cast<std::chrono::seconds>(*d);
    } else {
      return KeyError(key, "unknown key");
    }
  }
  LayerReaderOptions& r = config.reader;
  if (r.readahead_window > 0) {
    r.readahead_window_min = std::min(r.readahead_window_min, r.readahead_window);
    if (r.readahead_window > r.readahead_window_max) {
      return KeyError("readahead_window", "must not exceed readahead_window_max");
    }
  }
  return config;
}

}  // namespace lazypull::mount
