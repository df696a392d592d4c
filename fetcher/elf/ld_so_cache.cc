#include "fetcher/elf/ld_so_cache.h"

#include <algorithm>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::elf {
namespace {

constexpr std::string_view kOldMagic = "ld.so-1.7.0";
constexpr std::string_view kNewMagic = "glibc-ld.so.cache1.1";
constexpr uint64_t kOldHeader = 16;  // magic[11], pad, nlibs
constexpr uint64_t kOldEntry = 12;
constexpr uint64_t kNewHeader = 48;
constexpr uint64_t kNewEntry = 24;
constexpr uint8_t kEndianMask = 3;
constexpr uint8_t kEndianLittle = 2;
constexpr uint8_t kEndianBig = 3;

uint64_t ReadUint(std::string_view data, uint64_t at, int width, bool big) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) {
    uint64_t byte = static_cast<uint8_t>(data[at + (big ? i : width - 1 - i)]);
    v = (v << 8) | byte;
  }
  return v;
}

// The byte order under which a table of `entry_size`-byte entries fits in `available` bytes.
std::optional<bool> GuessBigEndian(std::string_view data, uint64_t count_at, uint64_t available,
                                   uint64_t entry_size) {
  if (ReadUint(data, count_at, 4, false) <= available / entry_size) return false;
  if (ReadUint(data, count_at, 4, true) <= available / entry_size) return true;
  return std::nullopt;
}

struct Table {
  uint64_t base = 0;        // string offsets are relative to this
  uint64_t entries_at = 0;  // first entry
  uint64_t entry_size = 0;
  uint64_t count = 0;
  bool big_endian = false;
  bool is_new = false;
};

absl::StatusOr<std::string> ReadString(std::string_view data, const Table& t, uint64_t offset,
                                       const char* what, uint64_t index,
                                       const LdSoCacheLimits& limits) {
  uint64_t available = data.size() - t.base;
  if (offset >= available) {
    return absl::DataLossError(
        fmt::format("ld.so.cache entry {}: {} offset {} past the end", index, what, offset));
  }
  std::string_view rest = data.substr(t.base + offset, uint64_t{limits.max_string} + 1);
  size_t nul = rest.find('\0');
  if (nul == std::string_view::npos) {
    return absl::DataLossError(
        fmt::format("ld.so.cache entry {}: {} string at {} has no NUL within {} bytes", index, what,
                    t.base + offset, limits.max_string));
  }
  return std::string(rest.substr(0, nul));
}

absl::StatusOr<Table> NewTable(std::string_view data, uint64_t base,
                               const LdSoCacheLimits& limits) {
  Table t;
  t.base = base;
  t.is_new = true;
  t.entries_at = base + kNewHeader;
  t.entry_size = kNewEntry;
  uint8_t flags = static_cast<uint8_t>(data[base + 28]) & kEndianMask;
  uint64_t available = data.size() - t.entries_at;
  if (flags == kEndianLittle || flags == kEndianBig) {
    t.big_endian = flags == kEndianBig;
  } else if (flags == 0) {
    auto big = GuessBigEndian(data, base + 20, available, kNewEntry);
    if (!big) return absl::DataLossError("ld.so.cache: entry count exceeds the file");
    t.big_endian = *big;
  } else {
    return absl::DataLossError("ld.so.cache: invalid byte order flag");
  }
  t.count = ReadUint(data, base + 20, 4, t.big_endian);
  if (t.count > available / kNewEntry) {
    return absl::DataLossError(
        fmt::format("ld.so.cache: {} entries exceed the {}-byte file", t.count, data.size()));
  }
  return t;
}

}  // namespace

absl::StatusOr<LdSoCache> LdSoCache::Parse(std::string_view data, const LdSoCacheLimits& limits) {
  Table t;
  if (data.size() >= kNewHeader && data.substr(0, kNewMagic.size()) == kNewMagic) {
    auto nt = NewTable(data, 0, limits);
    if (!nt.ok()) return nt.status();
    t = *nt;
  } else if (data.size() >= kOldHeader && data.substr(0, kOldMagic.size()) == kOldMagic) {
    auto big = GuessBigEndian(data, 12, data.size() - kOldHeader, kOldEntry);
    if (!big) return absl::DataLossError("ld.so.cache: old-format entry count exceeds the file");
    t.big_endian = *big;
    t.count = ReadUint(data, 12, 4, t.big_endian);
    t.entries_at = kOldHeader;
    t.entry_size = kOldEntry;
    t.base = kOldHeader + t.count * kOldEntry;
    // The new table follows at the next boundary of its alignment: 8 where uint64_t is
    // 8-aligned, 4 on i386.
    for (uint64_t align : {8, 4}) {
      uint64_t at = (t.base + align - 1) / align * align;
      if (at + kNewHeader <= data.size() && data.substr(at, kNewMagic.size()) == kNewMagic) {
        auto nt = NewTable(data, at, limits);
        if (!nt.ok()) return nt.status();
        t = *nt;
        break;
      }
    }
  } else {
    return absl::InvalidArgumentError("not an ld.so.cache (unknown magic)");
  }
  if (t.count > limits.max_entries) {
    return absl::ResourceExhaustedError(
        fmt::format("ld.so.cache: {} entries (limit {})", t.count, limits.max_entries));
  }
  LdSoCache cache;
  cache.new_format_ = t.is_new;
  cache.entries_.reserve(t.count);
  for (uint64_t i = 0; i < t.count; ++i) {
    uint64_t at = t.entries_at + i * t.entry_size;
    LdSoCacheEntry e;
    e.flags = static_cast<int32_t>(ReadUint(data, at, 4, t.big_endian));
    uint64_t key = ReadUint(data, at + 4, 4, t.big_endian);
    uint64_t value = ReadUint(data, at + 8, 4, t.big_endian);
    if (t.is_new) e.hwcap = ReadUint(data, at + 16, 8, t.big_endian);
    auto soname = ReadString(data, t, key, "key", i, limits);
    if (!soname.ok()) return soname.status();
    auto path = ReadString(data, t, value, "value", i, limits);
    if (!path.ok()) return path.status();
    e.soname = std::move(*soname);
    e.path = std::move(*path);
    cache.by_soname_[e.soname].push_back(static_cast<uint32_t>(i));
    cache.entries_.push_back(std::move(e));
  }
  return cache;
}

std::optional<std::string_view> LdSoCache::Lookup(std::string_view soname,
                                                  std::span<const int32_t> accepted_flags) const {
  auto it = by_soname_.find(std::string(soname));
  if (it == by_soname_.end()) return std::nullopt;
  const LdSoCacheEntry* with_hwcap = nullptr;
  for (uint32_t i : it->second) {
    const LdSoCacheEntry& e = entries_[i];
    if (std::find(accepted_flags.begin(), accepted_flags.end(), e.flags) == accepted_flags.end()) {
      continue;
    }
    if (e.hwcap == 0) return std::string_view(e.path);
    if (with_hwcap == nullptr) with_hwcap = &e;
  }
  if (with_hwcap != nullptr) return std::string_view(with_hwcap->path);
  return std::nullopt;
}

}  // namespace lazypull::elf
