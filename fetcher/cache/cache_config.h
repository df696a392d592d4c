// CacheConfig: settings of the on-disk chunk cache, and the `[cache]` TOML section.
//
//   [cache]
//   dir = "/var/lib/lazypull/cache"   # default: "" = the owner's choice (<root>/cache)
//   max_bytes = "10GiB"               # integer bytes, or a string with B/KiB/MiB/GiB/TiB
//                                     # (also K/M/G/T and KB/MB/GB/TB, all powers of 1024)
//   max_open_files = 512              # bound of the cache of open chunk fds
//
// Value type; thread-compatible.
#ifndef LAZYPULL_FETCHER_CACHE_CACHE_CONFIG_H_
#define LAZYPULL_FETCHER_CACHE_CACHE_CONFIG_H_

#include <toml++/toml.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lazypull {

struct CacheConfig {
  // Directory of the cache. Empty means "not overridden": the owner (the daemon) fills in
  // its default, <root>/cache, before opening the cache.
  std::string dir;
  // Upper bound of the bytes of all cached chunks; least recently used chunks are evicted
  // to stay below it. A chunk larger than this is served but never stored.
  uint64_t max_bytes = uint64_t{10} << 30;
  // How many chunk files are kept open for hot reads (bounded LRU of fds).
  size_t max_open_files = 512;
  // How often a hit persists its access time (the file's mtime, which orders LRU after a
  // restart). Within this interval the in-memory LRU is exact but a restart may reorder
  // entries. Not a TOML key; tests set it to zero.
  std::chrono::milliseconds lru_persist_interval{1000};
};

// Parses the `[cache]` section (pass the section's table, not the document root). Missing
// keys keep their defaults. InvalidArgument for unknown keys, wrong types, zero or negative
// sizes, or an unparsable size string; the message names the key as `cache.<key>`.
absl::StatusOr<CacheConfig> ParseCacheConfig(const toml::table& section);

// Parses a byte size: "4096", "512MiB", "10G", "1 TiB". InvalidArgument on anything else
// or on overflow.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_CACHE_CACHE_CONFIG_H_
