// ContainerdProcess::Ctr's handling of ctr's stdout copy race, against fake `containerd` and
// `ctr` executables put first on PATH: a foreground `run` of `/bin/sh -c SCRIPT` is run again
// only when it exited 0 without the task's end marker (output lost), never otherwise.
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

// The fake ctr logs every call's arguments (after --address) to $FAKE_CTR_LOG, one line each,
// and for `run` behaves by container id (the 4th argument from the end):
//   lost-once   first run: exit 0 with no output; then runs SCRIPT
//   cut-once    first run: SCRIPT's output cut short, exit 0; then runs SCRIPT
//   lost-always every run: exit 0 with no output
//   fails       exit 1 with a ctr error (no task ran)
//   anything    runs SCRIPT
constexpr char kFakeCtr[] = R"(#!/bin/bash
shift 2
echo "$*" >> "$FAKE_CTR_LOG"
case " $* " in *" run "*) ;; *) exit 0 ;; esac
args=("$@")
n=${#args[@]}
id=${args[n-4]}
script=${args[n-1]}
runs=$(grep -c " $id /bin/sh -c" "$FAKE_CTR_LOG")
case "$id" in
  lost-once) [ "$runs" = 1 ] && exit 0 ;;
  cut-once) [ "$runs" = 1 ] && { /bin/sh -c "$script" | head -c 3; exit 0; } ;;
  lost-always) exit 0 ;;
  fails) echo "ctr: failed to create shim task"; exit 1 ;;
esac
exec /bin/sh -c "$script"
)";

class CtrRunRetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteFile(dir_.Sub("bin/ctr"), kFakeCtr).ok());
    ASSERT_TRUE(WriteFile(dir_.Sub("bin/containerd"), "#!/bin/sh\nexec sleep 600\n").ok());
    ASSERT_EQ(::chmod(dir_.Sub("bin/ctr").c_str(), 0755), 0);
    ASSERT_EQ(::chmod(dir_.Sub("bin/containerd").c_str(), 0755), 0);
    const char* path = getenv("PATH");
    setenv("PATH", (dir_.Sub("bin") + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
    setenv("FAKE_CTR_LOG", dir_.Sub("ctr.log").c_str(), 1);
    auto c = ContainerdProcess::Start(dir_.path());
    ASSERT_TRUE(c.ok()) << c.status();
    containerd_ = std::move(*c);
  }

  // The fake ctr's calls for container `id` (arguments after --address, one string each).
  std::vector<std::string> CallsFor(const std::string& id) {
    std::vector<std::string> out;
    for (absl::string_view line : absl::StrSplit(*ReadFile(dir_.Sub("ctr.log")), '\n')) {
      std::vector<std::string> words = absl::StrSplit(line, ' ');
      if (std::find(words.begin(), words.end(), id) != words.end()) out.emplace_back(line);
    }
    return out;
  }
  absl::StatusOr<CommandResult> Run(const std::string& id) {
    return containerd_->Ctr(
        {"-n", "ns1", "run", "--rm", "img:v1", id, "/bin/sh", "-c", "echo hello; echo world"});
  }

  TempDir dir_{"lpctr"};
  std::unique_ptr<ContainerdProcess> containerd_;
};

TEST_F(CtrRunRetryTest, CompleteOutputIsReturnedOnceWithoutTheMarker) {
  auto r = Run("plain");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, "hello\nworld\n");
  EXPECT_EQ(CallsFor("plain").size(), 1u);
  // The script's own exit code comes through.
  auto failing = containerd_->Ctr(
      {"-n", "ns1", "run", "--rm", "img:v1", "plain-rc", "/bin/sh", "-c", "echo partial; exit 3"});
  ASSERT_TRUE(failing.ok());
  EXPECT_EQ(failing->exit_code, 3);
  EXPECT_EQ(failing->output, "partial\n");
  EXPECT_EQ(CallsFor("plain-rc").size(), 1u);
}

TEST_F(CtrRunRetryTest, LostOrCutOutputRunsOnlyThatStepAgainAfterDeletingTheContainer) {
  for (const std::string id : {"lost-once", "cut-once"}) {
    auto r = Run(id);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 0) << id;
    EXPECT_EQ(r->output, "hello\nworld\n") << id;
    std::vector<std::string> calls = CallsFor(id);
    ASSERT_EQ(calls.size(), 4u) << id;
    EXPECT_NE(calls[0].find("-n ns1 run --rm img:v1 " + id + " /bin/sh -c"), std::string::npos);
    EXPECT_EQ(calls[1], "-n ns1 tasks delete -f " + id);
    EXPECT_EQ(calls[2], "-n ns1 containers delete " + id);
    EXPECT_NE(calls[3].find("-n ns1 run --rm img:v1 " + id + " /bin/sh -c"), std::string::npos);
  }
}

TEST_F(CtrRunRetryTest, FailedRunsAreNotRetriedAndRetriesAreBounded) {
  auto failed = Run("fails");
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->exit_code, 1);
  EXPECT_EQ(failed->output, "ctr: failed to create shim task\n");
  EXPECT_EQ(CallsFor("fails").size(), 1u);

  auto lost = Run("lost-always");
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(lost->exit_code, 0);
  EXPECT_EQ(lost->output, "");
  size_t runs = 0;
  for (const std::string& c : CallsFor("lost-always")) runs += c.find(" run ") != std::string::npos;
  EXPECT_EQ(runs, 3u);
}

TEST_F(CtrRunRetryTest, OtherCommandsAndDetachedRunsAreNotWrapped) {
  auto ls = containerd_->Ctr({"-n", "ns1", "snapshots", "ls", "lost-always"});
  ASSERT_TRUE(ls.ok());
  EXPECT_EQ(CallsFor("lost-always"), std::vector<std::string>{"-n ns1 snapshots ls lost-always"});
  auto detached =
      containerd_->Ctr({"-n", "ns1", "run", "-d", "img:v1", "lost-once", "/bin/sh", "-c", "true"});
  ASSERT_TRUE(detached.ok());
  EXPECT_EQ(detached->exit_code, 0);
  EXPECT_EQ(CallsFor("lost-once"),
            std::vector<std::string>{"-n ns1 run -d img:v1 lost-once /bin/sh -c true"});
}

}  // namespace
}  // namespace lazypull::testing
