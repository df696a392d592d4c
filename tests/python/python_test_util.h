// Helpers of the Python prefetch tests: the machine's python3 (version, cache tag) and
// compiling sources into .pyc files with it.
#ifndef LAZYPULL_TESTS_PYTHON_PYTHON_TEST_UTIL_H_
#define LAZYPULL_TESTS_PYTHON_PYTHON_TEST_UTIL_H_

#include <map>
#include <string>

#include "gtest/gtest.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {

struct HostPython {
  std::string version;    // "3.11"
  std::string cache_tag;  // "cpython-311"
};

// The machine's python3 (a dependency of the test set: scripts/install-deps.sh).
inline HostPython GetHostPython() {
  auto r = RunCommand({"python3", "-c",
                       "import sys; print('%d.%d' % sys.version_info[:2]); "
                       "print(sys.implementation.cache_tag)"});
  EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
  HostPython p;
  if (!r.ok()) return p;
  const size_t nl = r->output.find('\n');
  p.version = r->output.substr(0, nl);
  p.cache_tag = r->output.substr(nl + 1, r->output.find('\n', nl + 1) - nl - 1);
  return p;
}

// Writes `files` (path relative to `root` → source) and compiles every .py under `root` into
// __pycache__ with python3 -m compileall.
inline void WriteAndCompile(const std::string& root,
                            const std::map<std::string, std::string>& files) {
  for (const auto& [path, text] : files) {
    const std::string full = root + "/" + path;
    ASSERT_TRUE(RunCommand({"mkdir", "-p", full.substr(0, full.rfind('/'))}).ok());
    ASSERT_TRUE(WriteFile(full, text).ok()) << full;
  }
  auto r = RunCommand({"python3", "-m", "compileall", "-q", root});
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
}

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_PYTHON_PYTHON_TEST_UTIL_H_
