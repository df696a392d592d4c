// LdSoCache: the soname → path table of an image's /etc/ld.so.cache, as glibc's ld.so reads
// it (elf/dl-cache.c), for resolving DT_NEEDED names without listing directories.
//
// Formats: the "new" one (magic "glibc-ld.so.cache" + version "1.1": a 48-byte header, then
// 24-byte entries {flags, key, value, osversion, hwcap}, then strings; key/value are offsets
// from the start of that header), written alone by glibc >= 2.32; and the "old" libc5-era
// one ("ld.so-1.7.0", 12-byte entries, strings after them), which older ldconfig wrote
// followed by the new table at the next 8-byte boundary. When both are present the new
// table is used, as ld.so does. The byte order comes from the new header's flags (2 little,
// 3 big); when unset (glibc < 2.33) or for the old table alone it is the one under which
// the entry count fits the file.
//
// Untrusted input: counts are checked against the bytes present and bounded
// (LdSoCacheLimits); every string offset is checked and each string must end with a NUL
// within max_string bytes. Errors: InvalidArgument "not an ld.so.cache" for other magic;
// DataLoss for a malformed table; ResourceExhausted over a limit.
//
// Thread-safety: immutable after Parse(); const methods are safe from any thread.
#ifndef LAZYPULL_FETCHER_ELF_LD_SO_CACHE_H_
#define LAZYPULL_FETCHER_ELF_LD_SO_CACHE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace lazypull::elf {

struct LdSoCacheEntry {
  std::string soname;  // key, e.g. "libc.so.6"
  std::string path;    // value, e.g. "/lib/x86_64-linux-gnu/libc.so.6"
  int32_t flags = 0;   // kFlagElfLibc6 | kFlagX8664Lib64, ... (abi.h)
  // Nonzero for hwcap-specific entries (legacy hwcap subdirectories, or glibc-hwcaps when
  // bit 62 is set); the baseline entry of the same soname has 0.
  uint64_t hwcap = 0;
};

struct LdSoCacheLimits {
  uint32_t max_entries = 1 << 16;
  uint32_t max_string = 4096;
};

class LdSoCache {
 public:
  // Parses a whole cache file.
  static absl::StatusOr<LdSoCache> Parse(std::string_view bytes,
                                         const LdSoCacheLimits& limits = {});

  // The path of `soname` among entries whose flags are in `accepted_flags` (Abi::cache_flags):
  // the first such entry without hwcap, else the first with one (ld.so on a CPU with the
  // hwcap would prefer that variant; prefetching the baseline copy instead is only a miss).
  // nullopt if none. The view lives as long as this cache.
  std::optional<std::string_view> Lookup(std::string_view soname,
                                         std::span<const int32_t> accepted_flags) const;

  // All entries in file order (glibc sorts them for its binary search).
  const std::vector<LdSoCacheEntry>& entries() const { return entries_; }
  // True if the table used was the new format.
  bool new_format() const { return new_format_; }

 private:
  std::vector<LdSoCacheEntry> entries_;
  absl::flat_hash_map<std::string, std::vector<uint32_t>> by_soname_;  // indexes, file order
  bool new_format_ = false;
};

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_LD_SO_CACHE_H_
