// LdSoCache on this machine's /etc/ld.so.cache (compared with `ldconfig -p`) and on built
// caches of the older layouts and the other byte order.
#include "fetcher/elf/ld_so_cache.h"

#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "fetcher/elf/abi.h"
#include "gtest/gtest.h"
#include "tests/elf/elf_test_util.h"

namespace lazypull::elf {
namespace {

using testing::ReadWholeFile;
using testing::RunTool;

constexpr int32_t kX8664 = kFlagX8664Lib64 | kFlagElfLibc6;

struct Entry {
  std::string soname;
  std::string path;
  int32_t flags = kX8664;
  uint64_t hwcap = 0;
};

class Writer {
 public:
  explicit Writer(bool big) : big_(big) {}
  void Put(std::string& out, uint64_t at, uint64_t v, int width) const {
    if (out.size() < at + width) out.resize(at + width, '\0');
    for (int i = 0; i < width; ++i) {
      out[at + i] = static_cast<char>((v >> (8 * (big_ ? width - 1 - i : i))) & 0xff);
    }
  }

 private:
  bool big_;
};

// The new table: header, entries, strings (offsets from the header's start).
std::string NewTable(const std::vector<Entry>& entries, bool big, uint8_t endian_flag) {
  Writer w(big);
  std::string out = "glibc-ld.so.cache1.1";
  out.resize(48, '\0');
  w.Put(out, 20, entries.size(), 4);
  out[28] = static_cast<char>(endian_flag);
  std::string strings;
  uint64_t strings_at = 48 + 24 * entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    uint64_t at = 48 + 24 * i;
    w.Put(out, at, static_cast<uint32_t>(entries[i].flags), 4);
    w.Put(out, at + 4, strings_at + strings.size(), 4);
    strings += entries[i].soname + '\0';
    w.Put(out, at + 8, strings_at + strings.size(), 4);
    strings += entries[i].path + '\0';
    w.Put(out, at + 16, entries[i].hwcap, 8);
  }
  w.Put(out, 24, strings.size(), 4);
  return out + strings;
}

// The libc5-era table alone (strings after the entries), or followed by a new table.
std::string OldTable(const std::vector<Entry>& old_entries, const std::string& new_table) {
  Writer w(false);
  std::string out = "ld.so-1.7.0";
  out.resize(16, '\0');
  w.Put(out, 12, old_entries.size(), 4);
  uint64_t base = 16 + 12 * old_entries.size();
  std::string strings;
  if (!new_table.empty()) {
    uint64_t aligned = (base + 7) / 8 * 8;
    strings.assign(aligned - base, '\0');
    strings += new_table;
  }
  for (size_t i = 0; i < old_entries.size(); ++i) {
    uint64_t at = 16 + 12 * i;
    w.Put(out, at, static_cast<uint32_t>(old_entries[i].flags), 4);
    w.Put(out, at + 4, strings.size(), 4);
    strings += old_entries[i].soname + '\0';
    w.Put(out, at + 8, strings.size(), 4);
    strings += old_entries[i].path + '\0';
  }
  return out + strings;
}

TEST(LdSoCacheTest, ThisMachinesCacheMatchesLdconfig) {
  std::string data = ReadWholeFile("/etc/ld.so.cache");
  auto cache = LdSoCache::Parse(data);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_TRUE(cache->new_format());
  std::string text = RunTool({"ldconfig", "-p", "-C", "/etc/ld.so.cache"});
  std::smatch count;
  ASSERT_TRUE(std::regex_search(text, count, std::regex(R"((\d+) libs found in cache)")));
  EXPECT_EQ(cache->entries().size(), std::stoul(count[1]));
  // Every line "\tNAME (libc6,x86-64) => PATH" is an entry with flags 0x0303, in order.
  std::regex line(R"(\t(\S+) \(([^)]*)\) => (\S+))");
  size_t i = 0;
  std::string libc;
  for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it, ++i) {
    ASSERT_LT(i, cache->entries().size());
    const LdSoCacheEntry& e = cache->entries()[i];
    EXPECT_EQ(e.soname, (*it)[1].str());
    EXPECT_EQ(e.path, (*it)[3].str());
    std::string kind = (*it)[2];
    if (kind == "libc6,x86-64") {
      EXPECT_EQ(e.flags, kX8664) << e.soname;
    }
    if (kind == "libc6") {
      EXPECT_EQ(e.flags, kFlagElfLibc6) << e.soname;
    }
    if (e.soname == "libc.so.6" && kind == "libc6,x86-64") libc = e.path;
  }
  EXPECT_EQ(i, cache->entries().size());
  ASSERT_FALSE(libc.empty());
  std::vector<int32_t> x8664 = {kX8664};
  EXPECT_EQ(cache->Lookup("libc.so.6", x8664), libc);
  EXPECT_FALSE(cache->Lookup("libdoesnotexist.so.9", x8664).has_value());
  // Under the i386 flags only a 32-bit libc (if this machine has one) can come back.
  std::vector<int32_t> i386 = {kFlagElf, kFlagElfLibc6};
  auto libc32 = cache->Lookup("libc.so.6", i386);
  if (libc32) {
    EXPECT_NE(*libc32, libc);
  }
}

TEST(LdSoCacheTest, NewFormatBothByteOrdersAndFlagSelection) {
  std::vector<Entry> entries = {
      {"libfoo.so.1", "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1", kX8664,
       (1ull << 62) | 1},
      {"libfoo.so.1", "/lib32/libfoo.so.1", kFlagElfLibc6},
      {"libfoo.so.1", "/lib/x86_64-linux-gnu/libfoo.so.1", kX8664},
      {"libonlyhw.so", "/hw/libonlyhw.so", kX8664, 1ull << 62},
      {"libarm.so", "/lib/aarch64-linux-gnu/libarm.so", kFlagAarch64Lib64 | kFlagElfLibc6},
  };
  std::vector<int32_t> x8664 = {kX8664};
  std::vector<int32_t> arm = {kFlagAarch64Lib64 | kFlagElfLibc6};
  std::vector<int32_t> i386 = {kFlagElf, kFlagElfLibc6};
  for (auto [big, flag] :
       std::vector<std::tuple<bool, int>>{{false, 2}, {true, 3}, {false, 0}, {true, 0}}) {
    SCOPED_TRACE(::testing::Message() << "big=" << big << " flag=" << flag);
    auto cache = LdSoCache::Parse(NewTable(entries, big, static_cast<uint8_t>(flag)));
    ASSERT_TRUE(cache.ok()) << cache.status();
    ASSERT_EQ(cache->entries().size(), entries.size());
    EXPECT_EQ(cache->Lookup("libfoo.so.1", x8664), "/lib/x86_64-linux-gnu/libfoo.so.1");
    EXPECT_EQ(cache->Lookup("libfoo.so.1", i386), "/lib32/libfoo.so.1");
    EXPECT_FALSE(cache->Lookup("libfoo.so.1", arm).has_value());
    EXPECT_EQ(cache->Lookup("libarm.so", arm), "/lib/aarch64-linux-gnu/libarm.so");
    EXPECT_EQ(cache->Lookup("libonlyhw.so", x8664), "/hw/libonlyhw.so");
    EXPECT_EQ(cache->entries()[0].hwcap, (1ull << 62) | 1);
  }
}

TEST(LdSoCacheTest, OldFormatAloneAndFollowedByTheNewOne) {
  std::vector<Entry> old_entries = {{"libold.so.5", "/lib/libold.so.5", kFlagElfLibc6}};
  auto old_only = LdSoCache::Parse(OldTable(old_entries, ""));
  ASSERT_TRUE(old_only.ok()) << old_only.status();
  EXPECT_FALSE(old_only->new_format());
  std::vector<int32_t> i386 = {kFlagElf, kFlagElfLibc6};
  EXPECT_EQ(old_only->Lookup("libold.so.5", i386), "/lib/libold.so.5");

  // ldconfig before glibc 2.32 wrote both; ld.so reads the new table.
  std::vector<Entry> new_entries = {{"libnew.so.6", "/lib/x86_64-linux-gnu/libnew.so.6"}};
  auto both = LdSoCache::Parse(OldTable(old_entries, NewTable(new_entries, false, 0)));
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE(both->new_format());
  ASSERT_EQ(both->entries().size(), 1u);
  std::vector<int32_t> x8664 = {kX8664};
  EXPECT_EQ(both->Lookup("libnew.so.6", x8664), "/lib/x86_64-linux-gnu/libnew.so.6");
  EXPECT_FALSE(both->Lookup("libold.so.5", i386).has_value());
}

TEST(LdSoCacheTest, MalformedCaches) {
  std::vector<Entry> entries = {{"liba.so", "/lib/liba.so"}, {"libb.so", "/lib/libb.so"}};
  std::string good = NewTable(entries, false, 2);
  ASSERT_TRUE(LdSoCache::Parse(good).ok());
  EXPECT_EQ(LdSoCache::Parse("hello").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LdSoCache::Parse(std::string(100, '\0')).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Entry count beyond the file.
  std::string count = good;
  count[20] = static_cast<char>(0xff);
  EXPECT_EQ(LdSoCache::Parse(count).status().code(), absl::StatusCode::kDataLoss);
  // A string offset past the end.
  std::string offset = good;
  offset[48 + 4 + 2] = 0x40;
  EXPECT_EQ(LdSoCache::Parse(offset).status().code(), absl::StatusCode::kDataLoss);
  // The last string's NUL cut off.
  EXPECT_EQ(LdSoCache::Parse(good.substr(0, good.size() - 1)).status().code(),
            absl::StatusCode::kDataLoss);
  // Invalid byte-order flag.
  std::string endian = good;
  endian[28] = 1;
  EXPECT_EQ(LdSoCache::Parse(endian).status().code(), absl::StatusCode::kDataLoss);
  // Over the entry limit.
  LdSoCacheLimits one_entry;
  one_entry.max_entries = 1;
  EXPECT_EQ(LdSoCache::Parse(good, one_entry).status().code(),
            absl::StatusCode::kResourceExhausted);
  // A string longer than the limit.
  LdSoCacheLimits short_strings;
  short_strings.max_string = 4;
  EXPECT_EQ(LdSoCache::Parse(good, short_strings).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lazypull::elf
