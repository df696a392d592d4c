// Checks the harness itself against the real registry, so a broken harness fails loudly here
// rather than as a confusing failure in a module's test.
#include <gtest/gtest.h>

#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

TEST(HarnessTest, RunCommandCapturesOutputAndExitCode) {
  auto r = RunShell("echo out; echo err >&2; exit 3");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->output, "out\nerr\n");
}

TEST(HarnessTest, RegistryAnswersV2) {
  TempDir dir;
  auto reg = RegistryProcess::Start(dir.path());
  ASSERT_TRUE(reg.ok()) << reg.status();
  auto r = RunShell("curl -s -o /dev/null -w '%{http_code}' http://" + (*reg)->host() + "/v2/");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "200");
}

}  // namespace
}  // namespace lazypull::testing
