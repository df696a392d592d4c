// Helpers for the elf tests: whole files, and readelf's and ldconfig's views of this machine's
// binaries (the reference the parser is compared with).
#ifndef LAZYPULL_TESTS_ELF_ELF_TEST_UTIL_H_
#define LAZYPULL_TESTS_ELF_ELF_TEST_UTIL_H_

#include <cstdint>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "tests/elf/synthetic_elf.h"
#include "tests/harness/subprocess.h"

namespace lazypull::elf::testing {

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// stdout of a command that must succeed.
inline std::string RunTool(const std::vector<std::string>& argv) {
  auto r = lazypull::testing::RunCommand(argv, std::chrono::seconds(120), {{"LC_ALL", "C"}});
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return "";
  EXPECT_EQ(r->exit_code, 0) << r->output;
  return r->output;
}

// The "Shared library: [x]" names of `readelf -d`, in order.
inline std::vector<std::string> ReadelfNeeded(const std::string& path) {
  std::vector<std::string> out;
  std::string text = RunTool({"readelf", "-dW", path});
  std::regex re(R"(\(NEEDED\)\s+Shared library: \[([^\]]+)\])");
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) {
    out.push_back((*it)[1]);
  }
  return out;
}

// The bracketed value of one `readelf -d` tag (SONAME, RUNPATH, RPATH); nullopt if absent.
inline std::optional<std::string> ReadelfTag(const std::string& path, const std::string& tag) {
  std::string text = RunTool({"readelf", "-dW", path});
  std::regex re("\\(" + tag + "\\)\\s+[^\\[]*\\[([^\\]]*)\\]");
  std::smatch m;
  if (!std::regex_search(text, m, re)) return std::nullopt;
  return m[1];
}

// The (offset, filesz) of every program header of `type` ("LOAD", "DYNAMIC", "INTERP").
inline std::vector<ByteRange> ReadelfSegments(const std::string& path, const std::string& type) {
  std::vector<ByteRange> out;
  std::string text = RunTool({"readelf", "-lW", path});
  std::regex re("\\n\\s*" + type +
                R"(\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s)");
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) {
    out.push_back({std::stoull((*it)[1], nullptr, 16), std::stoull((*it)[2], nullptr, 16)});
  }
  return out;
}

}  // namespace lazypull::elf::testing

#endif  // LAZYPULL_TESTS_ELF_ELF_TEST_UTIL_H_
