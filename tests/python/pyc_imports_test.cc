// ParsePycImports on modules compiled by the machine's python3, and on damaged ones.
#include "fetcher/python/pyc_imports.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/test_env.h"
#include "tests/python/python_test_util.h"

namespace lazypull::python {
namespace {

using ::lazypull::testing::TempDir;
using ::testing::ElementsAre;

std::string Compile(const TempDir& dir, const std::string& source) {
  const testing::HostPython py = testing::GetHostPython();
  testing::WriteAndCompile(dir.path(), {{"m.py", source}});
  auto bytes = testing::ReadFile(dir.path() + "/__pycache__/m." + py.cache_tag + ".pyc");
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

TEST(PycImportsTest, ModuleLevelImportsInOrder) {
  TempDir dir;
  const std::string pyc = Compile(dir,
                                  "import os, json.decoder\n"
                                  "from . import sibling\n"
                                  "from .pkg import thing\n"
                                  "from collections import OrderedDict, abc\n"
                                  "import a.b as c\n"
                                  "def f():\n"
                                  "    import lazy_only\n"
                                  "class K:\n"
                                  "    import in_class_body\n");
  ASSERT_TRUE(IsPycMagic(pyc));
  absl::StatusOr<PycInfo> info = ParsePycImports(pyc);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->decoded);
  EXPECT_THAT(info->imports, ElementsAre(PycImport{"os", {}}, PycImport{"json.decoder", {}},
                                         PycImport{"", {"sibling"}}, PycImport{"pkg", {"thing"}},
                                         PycImport{"collections", {"OrderedDict", "abc"}},
                                         PycImport{"a.b", {"b"}}));
}

TEST(PycImportsTest, NameIndexAbove255UsesExtendedArg) {
  TempDir dir;
  std::string source;
  for (int i = 0; i < 300; ++i)
    source += "v" + std::to_string(i) + " = " + std::to_string(i) + "\n";
  source += "import zlib\n";
  absl::StatusOr<PycInfo> info = ParsePycImports(Compile(dir, source));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_THAT(info->imports, ElementsAre(PycImport{"zlib", {}}));
}

TEST(PycImportsTest, NoImports) {
  TempDir dir;
  absl::StatusOr<PycInfo> info = ParsePycImports(Compile(dir, "x = (1, 2.5, 'a', b'b', None)\n"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->imports.empty());
}

TEST(PycImportsTest, EveryTruncationIsAnErrorNotACrash) {
  TempDir dir;
  const std::string pyc = Compile(dir,
                                  "import os\nfrom json import decoder\n"
                                  "def g(x=1.5, *a, **k):\n    return {'a': [x, 2j], 3: {4}}\n");
  ASSERT_TRUE(ParsePycImports(pyc).ok());
  for (size_t n = 0; n < pyc.size(); ++n) {
    absl::StatusOr<PycInfo> info = ParsePycImports(std::string_view(pyc).substr(0, n));
    ASSERT_FALSE(info.ok()) << "prefix of " << n << " bytes parsed";
    const absl::StatusCode want =
        n < 16 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kDataLoss;
    EXPECT_EQ(info.status().code(), want) << n << ": " << info.status();
  }
}

TEST(PycImportsTest, RefusesOtherFilesAndVersions) {
  EXPECT_EQ(ParsePycImports("\x7f"
                            "ELF\x02\x01\x01" +
                            std::string(16, '\0'))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(
      IsPycMagic("\x7f"
                 "ELF"));
  // Magic 3600 (a future CPython) and 3379 (3.6, 12-byte header).
  std::string future = std::string("\x10\x0e\r\n", 4) + std::string(12, '\0') + "N";
  EXPECT_EQ(ParsePycImports(future).status().code(), absl::StatusCode::kUnimplemented);
  std::string old = std::string("\x33\x0d\r\n", 4) + std::string(12, '\0') + "N";
  EXPECT_EQ(ParsePycImports(old).status().code(), absl::StatusCode::kUnimplemented);
}

std::string Header() { return std::string("\xa7\x0d\r\n", 4) + std::string(12, '\0'); }

TEST(PycImportsTest, HostileMarshalData) {
  // Nesting past the depth limit: 100 one-item tuples.
  std::string deep = Header();
  for (int i = 0; i < 100; ++i) deep += ")\x01";
  deep += "N";
  EXPECT_EQ(ParsePycImports(deep).status().code(), absl::StatusCode::kResourceExhausted);
  // A back-reference to an object that does not exist yet.
  EXPECT_EQ(ParsePycImports(Header() + "r" + std::string("\x05\0\0\0", 4)).status().code(),
            absl::StatusCode::kDataLoss);
  // A tuple claiming 2^31-1 items in 5 bytes.
  EXPECT_EQ(ParsePycImports(Header() + "(\xff\xff\xff\x7f").status().code(),
            absl::StatusCode::kDataLoss);
  // A top object that is no code object.
  EXPECT_EQ(ParsePycImports(Header() + "N").status().code(), absl::StatusCode::kDataLoss);
  // An unknown type byte.
  EXPECT_EQ(ParsePycImports(Header() + "Q").status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lazypull::python
