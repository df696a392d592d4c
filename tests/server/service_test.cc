#include "server/service.h"

#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::TempDir;
using ::testing::HasSubstr;

// A remote-layer handler whose Prepare throws, as a bad_alloc deep in a layer mount would.
class ThrowingRemote final : public RemoteLayerHandler {
 public:
  absl::StatusOr<Labels> PrepareRemoteLayer(const RemoteLayerRequest& request,
                                            const std::string&) override {
    if (request.target_name == "throws-bad-alloc") throw std::bad_alloc();
    if (request.target_name == "throws-int") throw 42;
    return absl::UnimplementedError("not remote");
  }
  absl::Status RestoreRemoteLayer(int64_t, const SnapshotInfo&, const std::vector<int64_t>&,
                                  const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status ReleaseRemoteLayer(int64_t, const std::string&) override { return absl::OkStatus(); }
};

// The JSON log lines in `captured` whose "msg" is `msg`.
std::vector<nlohmann::json> LogLines(const std::string& captured, const std::string& msg) {
  std::vector<nlohmann::json> out;
  std::istringstream in(captured);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("msg", "") == msg) out.push_back(j);
  }
  return out;
}

TEST(GuardRpcTest, PassesResultsThroughAndTurnsExceptionsIntoInternal) {
  EXPECT_TRUE(GuardRpc("Stat", "k", [] { return grpc::Status::OK; }).ok());
  grpc::Status not_found =
      GuardRpc("Stat", "k", [] { return grpc::Status(grpc::StatusCode::NOT_FOUND, "no k"); });
  EXPECT_EQ(not_found.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(not_found.error_message(), "no k");

  ::testing::internal::CaptureStderr();
  grpc::Status threw = GuardRpc("Commit", "key-1",
                                []() -> grpc::Status { throw std::runtime_error("disk on fire"); });
  grpc::Status threw_other = GuardRpc("Remove", "key-2", []() -> grpc::Status { throw 7; });
  std::vector<nlohmann::json> lines =
      LogLines(::testing::internal::GetCapturedStderr(), "rpc threw");
  EXPECT_EQ(threw.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(threw.error_message(), "Commit failed: disk on fire");
  EXPECT_EQ(threw_other.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(threw_other.error_message(), "Remove failed: unknown exception");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["level"], "error");
  EXPECT_EQ(lines[0]["rpc"], "Commit");
  EXPECT_EQ(lines[0]["key"], "key-1");
  EXPECT_EQ(lines[0]["error"], "disk on fire");
  EXPECT_EQ(lines[1]["rpc"], "Remove");
  EXPECT_EQ(lines[1]["key"], "key-2");
  EXPECT_EQ(lines[1]["error"], "non-std exception");
}

TEST(SnapshotsServiceTest, HandlerThatThrowsFailsOneCallAndServiceKeepsServing) {
  TempDir tmp;
  ThrowingRemote remote;
  Snapshotter::Options options;
  options.root = tmp.Sub("root");
  options.remote = &remote;
  absl::StatusOr<std::unique_ptr<Snapshotter>> snapshotter = Snapshotter::Open(options);
  ASSERT_TRUE(snapshotter.ok()) << snapshotter.status();
  SnapshotsService service(snapshotter->get());

  for (const char* target : {"throws-bad-alloc", "throws-int"}) {
    snapshots_v1::PrepareSnapshotRequest req;
    req.set_key(std::string("ns/1/") + target);
    (*req.mutable_labels())[kTargetSnapshotRefLabel] = target;
    snapshots_v1::PrepareSnapshotResponse resp;
    ::testing::internal::CaptureStderr();
    grpc::Status st = service.Prepare(nullptr, &req, &resp);
    std::vector<nlohmann::json> lines =
        LogLines(::testing::internal::GetCapturedStderr(), "rpc threw");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL) << target;
    EXPECT_THAT(st.error_message(), HasSubstr("Prepare failed")) << target;
    ASSERT_EQ(lines.size(), 1u) << target;
    EXPECT_EQ(lines[0]["rpc"], "Prepare");
    EXPECT_EQ(lines[0]["key"], req.key());
  }

  // The service still answers: a normal Prepare, then Stat of it.
  snapshots_v1::PrepareSnapshotRequest req;
  req.set_key("ns/1/plain");
  snapshots_v1::PrepareSnapshotResponse resp;
  grpc::Status st = service.Prepare(nullptr, &req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.mounts_size(), 1);
  EXPECT_EQ(resp.mounts(0).type(), "bind");
  snapshots_v1::StatSnapshotRequest stat_req;
  stat_req.set_key("ns/1/plain");
  snapshots_v1::StatSnapshotResponse stat_resp;
  ASSERT_TRUE(service.Stat(nullptr, &stat_req, &stat_resp).ok());
  EXPECT_EQ(stat_resp.info().name(), "ns/1/plain");
  EXPECT_EQ(stat_resp.info().kind(), snapshots_v1::ACTIVE);
}

}  // namespace
}  // namespace lazypull
