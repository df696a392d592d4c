#include "fetcher/cache/cache_config.h"

#include <toml++/toml.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lazypull {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<CacheConfig> ParseSection(std::string_view doc) {
  toml::table root = toml::parse(doc);
  const toml::table* section = root["cache"].as_table();
  return ParseCacheConfig(section ? *section : toml::table{});
}

TEST(CacheConfigTest, DefaultsWhenSectionIsEmpty) {
  auto c = ParseSection("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dir, "");
  EXPECT_EQ(c->max_bytes, uint64_t{10} << 30);
  EXPECT_EQ(c->max_open_files, 512u);
}

TEST(CacheConfigTest, ParsesEveryKey) {
  auto c = ParseSection(R"(
[cache]
dir = "/var/lib/lazypull/cache"
max_bytes = "512MiB"
max_open_files = 64
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dir, "/var/lib/lazypull/cache");
  EXPECT_EQ(c->max_bytes, uint64_t{512} << 20);
  EXPECT_EQ(c->max_open_files, 64u);

  c = ParseSection("[cache]\nmax_bytes = 123456789\n");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->max_bytes, 123456789u);
}

TEST(CacheConfigTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("1K"), 1024u);
  EXPECT_EQ(*ParseByteSize("10GiB"), uint64_t{10} << 30);
  EXPECT_EQ(*ParseByteSize("2 TB"), uint64_t{2} << 40);
  EXPECT_EQ(*ParseByteSize("3mb"), uint64_t{3} << 20);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("GiB").ok());
  EXPECT_FALSE(ParseByteSize("10 parsecs").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999").ok());
  EXPECT_FALSE(ParseByteSize("20000000TiB").ok());
}

TEST(CacheConfigTest, RejectsBadValuesNamingTheKey) {
  struct Case {
    const char* doc;
    const char* key;
  } cases[] = {
      {"[cache]\nmax_bytes = 0\n", "cache.max_bytes"},
      {"[cache]\nmax_bytes = -5\n", "cache.max_bytes"},
      {"[cache]\nmax_bytes = \"lots\"\n", "cache.max_bytes"},
      {"[cache]\nmax_bytes = \"0GiB\"\n", "cache.max_bytes"},
      {"[cache]\nmax_bytes = 1.5\n", "cache.max_bytes"},
      {"[cache]\nmax_open_files = 0\n", "cache.max_open_files"},
      {"[cache]\nmax_open_files = \"many\"\n", "cache.max_open_files"},
      {"[cache]\ndir = 5\n", "cache.dir"},
      {"[cache]\ndir = \"\"\n", "cache.dir"},
      {"[cache]\nmax_size = 5\n", "cache.max_size"},
  };
  for (const Case& c : cases) {
    auto r = ParseSection(c.doc);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.doc;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.key)) << c.doc;
  }
}

}  // namespace
}  // namespace lazypull
