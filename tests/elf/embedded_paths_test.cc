// EmbeddedPaths on synthetic data (exact results) and on this machine's own glibc and
// libcrypto (the paths their read-only data segments name).
#include "fetcher/elf/embedded_paths.h"

#include <string>
#include <vector>

#include "fetcher/elf/elf_parser.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/elf/elf_test_util.h"

namespace lazypull::elf {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::ReadWholeFile;

std::string CStrings(const std::vector<std::string>& strings) {
  std::string out;
  for (const std::string& s : strings) out += s + std::string(1, '\0');
  return out;
}

// The data of every read-only, non-executable LOAD segment but the first: what the
// prefetcher scans.
std::string ReadOnlyData(const std::string& path) {
  std::string file = ReadWholeFile(path);
  absl::StatusOr<ElfInfo> info = ParseElf(file, file.size());
  EXPECT_TRUE(info.ok()) << path << ": " << info.status();
  std::string out;
  if (!info.ok()) return out;
  for (size_t i = 1; i < info->loads.size(); ++i) {
    const LoadSegment& s = info->loads[i];
    if ((s.flags & 3) == 0) out += file.substr(s.offset, s.file_size);
  }
  return out;
}

TEST(EmbeddedPathsTest, PathsInOrderWithoutDuplicates) {
  std::string data =
      CStrings({"/etc/nsswitch.conf", "hello", "/usr/share/nodejs/acorn/dist/acorn.js",
                "/etc/nsswitch.conf", "/usr/lib/ssl"});
  EXPECT_THAT(
      EmbeddedPaths(data),
      ElementsAre("/etc/nsswitch.conf", "/usr/share/nodejs/acorn/dist/acorn.js", "/usr/lib/ssl"));
}

TEST(EmbeddedPathsTest, RejectsWhatIsNoPath) {
  std::string data = CStrings({
      "/tmp",              // one component
      "/a/",               // trailing slash
      "/usr//lib",         // empty component
      "/usr/../etc/x",     // ".." component
      "/usr/./lib",        // "." component
      "/usr/lib %s",       // a format string
      "/usr/lib/\n",       // control character
      "usr/lib/relative",  // not absolute
      "/ab",               // shorter than min_length
  });
  data += "x/etc/hosts" + std::string(1, '\0');  // does not start after a NUL: inside a string
  EXPECT_THAT(EmbeddedPaths(data), IsEmpty());
  // Unterminated at the end: not a C string.
  EXPECT_THAT(EmbeddedPaths(std::string(1, '\0') + "/etc/passwd"), IsEmpty());
}

TEST(EmbeddedPathsTest, ConfigNamesJoinTheDirectoriesFound) {
  std::string data = CStrings({"openssl.cnf", "/usr/lib/ssl", "/usr/lib/ssl/certs", "README"});
  EXPECT_THAT(EmbeddedPaths(data),
              ElementsAre("/usr/lib/ssl", "/usr/lib/ssl/certs", "/usr/lib/ssl/openssl.cnf",
                          "/usr/lib/ssl/certs/openssl.cnf"));
}

TEST(EmbeddedPathsTest, Bounded) {
  std::vector<std::string> strings;
  for (int i = 0; i < 100; ++i) strings.push_back("/etc/file" + std::to_string(i));
  strings.push_back("a.conf");
  strings.push_back("/" + std::string(300, 'x') + "/y");
  EmbeddedPathOptions options;
  options.max_paths = 10;
  std::vector<std::string> paths = EmbeddedPaths(CStrings(strings), options);
  ASSERT_EQ(paths.size(), 10u);
  EXPECT_EQ(paths.front(), "/etc/file0");
  EXPECT_EQ(paths.back(), "/etc/file9");
  options.max_paths = 512;
  paths = EmbeddedPaths(CStrings(strings), options);
  EXPECT_EQ(paths.size(), 200u);  // 100 paths + 100 joins; the 303-byte string is none
  EXPECT_THAT(paths, Not(Contains(::testing::HasSubstr("xxxx"))));
}

TEST(EmbeddedPathsTest, GlibcNamesItsConfiguration) {
  std::vector<std::string> paths = EmbeddedPaths(ReadOnlyData("/lib/x86_64-linux-gnu/libc.so.6"));
  EXPECT_THAT(paths, Contains("/etc/nsswitch.conf"));
  EXPECT_THAT(paths, Contains("/etc/localtime"));
  EXPECT_THAT(paths, Contains("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"));
}

TEST(EmbeddedPathsTest, LibcryptoNamesOpensslCnf) {
  // libssl-dev (scripts/install-deps.sh) brings libcrypto.so.3; OPENSSLDIR is /usr/lib/ssl.
  std::vector<std::string> paths =
      EmbeddedPaths(ReadOnlyData("/lib/x86_64-linux-gnu/libcrypto.so.3"));
  EXPECT_THAT(paths, Contains("/usr/lib/ssl/openssl.cnf"));
}

}  // namespace
}  // namespace lazypull::elf
