// DaemonTest: each test gets its own TempDir, a real lazypull-snapshotter on it and a client.
#ifndef LAZYPULL_TESTS_SERVER_DAEMON_FIXTURE_H_
#define LAZYPULL_TESTS_SERVER_DAEMON_FIXTURE_H_

#include <sys/stat.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {

#define ASSERT_GRPC_OK(expr)                                                               \
  do {                                                                                     \
    ::grpc::Status _s = (expr);                                                            \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.error_code() << " " << _s.error_message(); \
  } while (0)
#define EXPECT_GRPC_CODE(expr, code)                                           \
  do {                                                                         \
    ::grpc::Status _s = (expr);                                                \
    EXPECT_EQ(_s.error_code(), (code)) << #expr << ": " << _s.error_message(); \
  } while (0)

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = SnapshotterProcess::Start(tmp_.path());
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  }
  void TearDown() override {
    client_.reset();
    if (daemon_ != nullptr) {
      absl::Status s = daemon_->Stop();
      EXPECT_TRUE(s.ok()) << s;
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
    }
  }

  // A fresh directory under the test's temp dir (a mount point or play area).
  std::string Dir(const std::string& name) {
    std::string path = tmp_.Sub("work/" + name);
    ::mkdir(tmp_.Sub("work").c_str(), 0755);
    ::mkdir(path.c_str(), 0755);
    return path;
  }
  std::string SnapshotsDir() const { return daemon_->root() + "/snapshots"; }

  TempDir tmp_{"lpsrv"};
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_SERVER_DAEMON_FIXTURE_H_
