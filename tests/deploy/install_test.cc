// systemd and the install layout (issue 11): `cmake --install` of this build into a prefix
// gives bin/, the unit and the default config; `systemd-analyze verify` accepts the unit (and
// is shown to reject a broken copy); the installed daemon, started with exactly the unit's
// ExecStart and a NOTIFY_SOCKET the way systemd starts a Type=notify service, sends READY=1
// once it serves (with the installed config's own paths and metrics port, in a node sandbox),
// `lazypull health` agrees, and SIGTERM (KillMode=process) brings STOPPING=1 and exit 0.
// Also the man-page-like --help.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/deploy/node_sandbox.h"
#include "tests/deploy/prom_text.h"
#include "tests/deploy/systemd_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

class InstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = RunCommand({"cmake", "--install", BinaryDir(), "--prefix", prefix_},
                        std::chrono::seconds(120));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->exit_code, 0) << r->output;
    auto unit = ReadFile(unit_path_);
    ASSERT_TRUE(unit.ok()) << unit.status();
    unit_ = *unit;
  }

  TempDir tmp_{"lpinst"};
  const std::string prefix_ = tmp_.Sub("prefix");
  const std::string unit_path_ = prefix_ + "/lib/systemd/system/lazypull-snapshotter.service";
  std::string unit_;
};

TEST_F(InstallTest, LayoutAndUnitAcceptedBySystemdAnalyze) {
  for (const std::string bin : {"lazypull-snapshotter", "lazypull", "lazypull-fuse-holder"}) {
    EXPECT_EQ(::access((prefix_ + "/bin/" + bin).c_str(), X_OK), 0) << bin;
  }
  auto config = ReadFile(prefix_ + "/etc/lazypull/config.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  auto shipped = ReadFile(SourceDir() + "/packaging/config.toml");
  ASSERT_TRUE(shipped.ok());
  EXPECT_EQ(*config, *shipped);
  EXPECT_TRUE(absl::StrContains(*config, "[metrics]\naddress = \"127.0.0.1:9102\""));

  EXPECT_EQ(UnitValue(unit_, "Type"), "notify");
  EXPECT_EQ(UnitValue(unit_, "ExecStart"), prefix_ + "/bin/lazypull-snapshotter --config " +
                                               prefix_ + "/etc/lazypull/config.toml");
  EXPECT_EQ(UnitValue(unit_, "Before"), "containerd.service");
  EXPECT_EQ(UnitValue(unit_, "Restart"), "on-failure");
  EXPECT_EQ(UnitValue(unit_, "KillMode"), "process");
  EXPECT_EQ(UnitValue(unit_, "LimitNOFILE"), "1048576");
  EXPECT_TRUE(absl::StrContains(UnitValue(unit_, "WantedBy"), "multi-user.target"));
  // Issue 20: the FUSE holder is its own unit that the daemon wants, never restarted with it.
  EXPECT_TRUE(absl::StrContains(unit_, "\nWants=lazypull-fuse-holder.service\n")) << unit_;
  for (const char* dep : {"Requires", "BindsTo", "PartOf", "Requisite"}) {
    EXPECT_FALSE(absl::StrContains(UnitValue(unit_, dep), "lazypull-fuse-holder")) << dep;
  }
  const std::string holder_path = prefix_ + "/lib/systemd/system/lazypull-fuse-holder.service";
  auto holder_unit = ReadFile(holder_path);
  ASSERT_TRUE(holder_unit.ok()) << holder_unit.status();
  EXPECT_EQ(UnitValue(*holder_unit, "ExecStart"),
            prefix_ + "/bin/lazypull-fuse-holder --socket /var/lib/lazypull/fuse-holder.sock");
  EXPECT_EQ(UnitValue(*holder_unit, "Restart"), "always");

  // Accepted with no warning at all (verify exits 0 on mere warnings).
  // Its messages go to the console, not to a journal this machine may lack.
  const std::map<std::string, std::string> env = {{"SYSTEMD_LOG_TARGET", "console"}};
  auto verify = RunCommand({"systemd-analyze", "verify", unit_path_, holder_path},
                           std::chrono::seconds(60), env);
  ASSERT_TRUE(verify.ok()) << verify.status();
  EXPECT_EQ(verify->exit_code, 0) << verify->output;
  EXPECT_EQ(verify->output, "");
  // Control: the same check sees a broken copy.
  std::string broken = unit_;
  broken.replace(broken.find("\nType=notify\n"), 13, "\nType=notifyy\n");
  ASSERT_TRUE(WriteFile(tmp_.Sub("broken/lazypull-snapshotter.service"), broken).ok());
  verify =
      RunCommand({"systemd-analyze", "verify", tmp_.Sub("broken/lazypull-snapshotter.service")},
                 std::chrono::seconds(60), env);
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(absl::StrContains(verify->output, "Failed to parse service type")) << verify->output;

  // An existing config survives a re-install.
  ASSERT_TRUE(WriteFile(prefix_ + "/etc/lazypull/config.toml", "log_level = \"debug\"\n").ok());
  auto r = RunCommand({"cmake", "--install", BinaryDir(), "--prefix", prefix_});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->output;
  EXPECT_EQ(*ReadFile(prefix_ + "/etc/lazypull/config.toml"), "log_level = \"debug\"\n");
}

TEST_F(InstallTest, HelpReadsLikeAManPage) {
  auto r = RunCommand({prefix_ + "/bin/lazypull-snapshotter", "--help"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  size_t last = 0;
  for (const char* section :
       {"NAME\n", "SYNOPSIS\n", "DESCRIPTION\n", "OPTIONS:\n", "CONFIGURATION\n", "CONTAINERD\n",
        "FILES\n", "METRICS\n", "SIGNALS\n", "ENVIRONMENT\n", "EXIT STATUS\n", "SEE ALSO\n"}) {
    size_t at = r->output.find(section);
    ASSERT_NE(at, std::string::npos) << section << "\n" << r->output;
    EXPECT_GT(at + 1, last) << section << " out of order";
    last = at;
  }
  for (const char* flag : {"--config FILE", "--address SOCKET", "--root DIR", "--log-level LEVEL",
                           "--metrics-address ADDRESS"}) {
    EXPECT_TRUE(absl::StrContains(r->output, flag)) << flag;
  }
}

TEST_F(InstallTest, ExecStartUnderNotifySocketSendsReadyAndStopsCleanly) {
  ASSERT_TRUE(EnterNodeSandbox(tmp_.path()).ok());
  NotifySocket notify(tmp_.Sub("notify.sock"));
  ASSERT_TRUE(notify.ok());
  std::vector<std::string> argv = absl::StrSplit(UnitValue(unit_, "ExecStart"), ' ');
  auto proc =
      Subprocess::Start(argv, tmp_.Sub("daemon.log"), {{"NOTIFY_SOCKET", tmp_.Sub("notify.sock")}});
  ASSERT_TRUE(proc.ok()) << proc.status();
  const std::string ready = notify.Receive(std::chrono::seconds(30));
  ASSERT_TRUE(absl::StartsWith(ready, "READY=1\n")) << ready << "\n" << proc->ReadLog();
  EXPECT_TRUE(absl::StrContains(ready, "MAINPID=" + std::to_string(proc->pid()))) << ready;
  EXPECT_TRUE(absl::StrContains(ready, "STATUS=serving on /run/lazypull/lazypull.sock"));
  // READY=1 means serving: the socket answers, with the installed config's own paths.
  auto health = RunCommand({prefix_ + "/bin/lazypull", "health"});
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->exit_code, 0) << health->output;
  EXPECT_TRUE(absl::StartsWith(health->output, "ok: /run/lazypull/lazypull.sock answered"));
  struct stat st;
  EXPECT_EQ(::stat("/var/lib/lazypull/metadata.db", &st), 0);
  auto metrics = Scrape("127.0.0.1:9102");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->Sum("lazypull_snapshot_requests_total", {{"method", "Stat"}}), 1);

  proc->Signal(SIGTERM);
  EXPECT_EQ(notify.Receive(std::chrono::seconds(30)), "STOPPING=1");
  auto status = proc->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  health = RunCommand({prefix_ + "/bin/lazypull", "health", "--timeout", "1"});
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->exit_code, 1) << health->output;
}

}  // namespace
}  // namespace lazypull::testing
