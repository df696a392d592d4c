// Daemon process behaviour: lock file, signals, socket mode, config file and flags.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <thread>

#include "gtest/gtest.h"
#include "tests/server/daemon_fixture.h"

namespace lazypull::testing {
namespace {

std::string Binary() { return BinaryDir() + "/bin/lazypull-snapshotter"; }

class DaemonProcessTest : public DaemonTest {};

TEST_F(DaemonProcessTest, SecondInstanceOnSameRootRefuses) {
  absl::StatusOr<CommandResult> r =
      RunCommand({Binary(), "--root", daemon_->root(), "--address", tmp_.Sub("other.sock")},
                 std::chrono::seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_NE(r->output.find("already running on root " + daemon_->root()), std::string::npos)
      << r->output;
  EXPECT_NE(r->output.find(std::to_string(daemon_->pid())), std::string::npos) << r->output;
  struct stat st;
  EXPECT_NE(::stat(tmp_.Sub("other.sock").c_str(), &st), 0);
  // The first instance is unaffected.
  ASSERT_GRPC_OK(client_->Prepare("still-works", ""));
}

TEST_F(DaemonProcessTest, SocketModeAndSigtermRemovesSocket) {
  struct stat st;
  ASSERT_EQ(::stat(daemon_->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  ASSERT_GRPC_OK(client_->Prepare("a", ""));
  absl::Status stopped = daemon_->Stop();
  ASSERT_TRUE(stopped.ok()) << stopped;  // exit status 0 after SIGTERM
  EXPECT_NE(::stat(daemon_->socket().c_str(), &st), 0);
  EXPECT_NE(daemon_->ReadLog().find("\"msg\":\"lazypull-snapshotter stopped\""), std::string::npos);
  // Restart after a clean stop and after kill -9 (stale socket and lock file left behind).
  ASSERT_TRUE(daemon_->Restart().ok());
  daemon_->Kill();
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  SnapshotClient c(daemon_->grpc_target());
  ASSERT_GRPC_OK(c.Stat("a", nullptr));
}

TEST_F(DaemonProcessTest, SigintShutsDownCleanlyWithInflightWork) {
  // Keep RPCs flowing while the signal arrives: every call either completes or is refused.
  std::atomic<bool> stop{false};
  std::atomic<int> ok_calls{0};
  std::thread load([&] {
    SnapshotClient c(daemon_->grpc_target());
    for (int i = 0; !stop; ++i) {
      if (c.Prepare("k" + std::to_string(i), "").ok()) ++ok_calls;
    }
  });
  // The signal arrives once calls are flowing (not after a fixed time).
  const bool flowing = WaitUntil([&] { return ok_calls.load() >= 5; }, std::chrono::seconds(30));
  daemon_->Signal(SIGINT);
  absl::StatusOr<int> status = daemon_->WaitForExit(std::chrono::seconds(15));
  stop = true;
  load.join();
  ASSERT_TRUE(flowing) << "no Prepare succeeded before the signal; log:\n" << daemon_->ReadLog();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  struct stat st;
  EXPECT_NE(::stat(daemon_->socket().c_str(), &st), 0);
  ASSERT_TRUE(daemon_->Restart().ok());
  SnapshotClient c(daemon_->grpc_target());
  std::vector<snapshots_v1::Info> infos;
  ASSERT_GRPC_OK(c.List({}, &infos));
  EXPECT_GE(static_cast<int>(infos.size()), ok_calls.load());
}

// Issue 17: the root holds private image data. Its mode is enforced at every start (kubelet's
// hostPath DirectoryOrCreate makes it 0755), and files left wider by an older version are
// tightened.
TEST_F(DaemonProcessTest, RootIsMadePrivateAtEveryStart) {
  const std::string root = daemon_->root();
  auto mode = [](const std::string& path) {
    struct stat st;
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode(root), 0700u);
  ASSERT_TRUE(daemon_->Stop().ok());
  for (const std::string& d : {root, root + "/snapshots"}) ASSERT_EQ(::chmod(d.c_str(), 0755), 0);
  for (const std::string& f : {root + "/metadata.db", root + "/lazypull.lock"}) {
    ASSERT_EQ(::chmod(f.c_str(), 0644), 0) << f;
  }
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  EXPECT_EQ(mode(root), 0700u);
  EXPECT_EQ(mode(root + "/snapshots"), 0700u);
  EXPECT_EQ(mode(root + "/metadata.db"), 0600u);
  EXPECT_EQ(mode(root + "/lazypull.lock"), 0600u);
  EXPECT_NE(daemon_->ReadLog().find("\"old_mode\":\"0755\""), std::string::npos);
  ASSERT_GRPC_OK(client_->Prepare("after-restart", ""));
}

TEST(DaemonConfigFileTest, ConfigFileAndFlagOverride) {
  TempDir tmp("lpcfg");
  ASSERT_TRUE(
      WriteFile(tmp.Sub("config.toml"), "root = \"" + tmp.Sub("cfgroot") + "\"\naddress = \"" +
                                            tmp.Sub("cfg.sock") + "\"\nsocket_mode = \"0600\"\n" +
                                            "log_level = \"warn\"\n[mount]\nbackend = \"auto\"\n" +
                                            "[metrics]\naddress = \"\"\n")
          .ok());
  // Flags override the file: --address wins, root comes from the file.
  auto p = Subprocess::Start({Binary(), "--config", tmp.Sub("config.toml"), "--address",
                              tmp.Sub("flag.sock"), "--log-level", "info"},
                             tmp.Sub("log"));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(WaitForUnixSocket(tmp.Sub("flag.sock"), std::chrono::seconds(20)).ok())
      << p->ReadLog();
  struct stat st;
  ASSERT_EQ(::stat(tmp.Sub("flag.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(::stat(tmp.Sub("cfgroot/metadata.db").c_str(), &st), 0);
  EXPECT_NE(::stat(tmp.Sub("cfg.sock").c_str(), &st), 0);
  p->Stop();
  std::string log = p->ReadLog();
  EXPECT_NE(log.find("\"mount_backend\":\"auto\""), std::string::npos) << log;

  // A broken config file is a clear startup error.
  ASSERT_TRUE(WriteFile(tmp.Sub("bad.toml"), "[mount]\nbackend = \"nfs\"\n").ok());
  absl::StatusOr<CommandResult> r = RunCommand({Binary(), "--config", tmp.Sub("bad.toml"), "--root",
                                                tmp.Sub("r2"), "--address", tmp.Sub("bad.sock")},
                                               std::chrono::seconds(20));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_NE(r->output.find("mount.backend"), std::string::npos) << r->output;
}

}  // namespace
}  // namespace lazypull::testing
