// Bad input gets the right gRPC code and changes nothing; keys are opaque strings.
#include <grpcpp/generic/generic_stub.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/server/daemon_fixture.h"

namespace lazypull::testing {
namespace {

class BadInputTest : public DaemonTest {
 protected:
  // Everything observable: listed infos (serialized) and the snapshot dirs.
  std::pair<std::vector<std::string>, std::vector<std::string>> State() {
    std::vector<snapshots_v1::Info> infos;
    EXPECT_TRUE(client_->List({}, &infos).ok());
    std::vector<std::string> ser;
    for (const auto& i : infos) ser.push_back(i.SerializeAsString());
    return {ser, ListDir(SnapshotsDir())};
  }
};

TEST_F(BadInputTest, RejectedRequestsChangeNothing) {
  ASSERT_GRPC_OK(client_->Prepare("a", ""));
  ASSERT_GRPC_OK(client_->Commit("base", "a"));
  ASSERT_GRPC_OK(client_->Prepare("active", "base", {{"k", "v"}}));
  auto before = State();

  EXPECT_GRPC_CODE(client_->Prepare("", ""), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->View("", "base"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Prepare("x", "no-such-parent"), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->View("x", "no-such-parent"), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->Prepare("x", "active"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Prepare("x", "", {{"big", std::string(4094, 'v')}}),
                   grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Prepare("x", "", {{std::string(4097, 'k'), ""}}),
                   grpc::StatusCode::INVALID_ARGUMENT);
  // Exactly at the cap is fine (checked after the rejections, removed below).
  EXPECT_GRPC_CODE(client_->Commit("c", "active", {{"big", std::string(4094, 'v')}}),
                   grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Commit("", "active"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Commit("c", ""), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Commit("c", "missing"), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->Remove(""), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->Remove("missing"), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->Remove("base"), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_GRPC_CODE(client_->Stat("missing", nullptr), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->Mounts("missing", nullptr), grpc::StatusCode::NOT_FOUND);
  EXPECT_GRPC_CODE(client_->Usage("missing", nullptr, nullptr), grpc::StatusCode::NOT_FOUND);
  snapshots_v1::Info info;
  info.set_name("active");
  (*info.mutable_labels())["k"] = "changed";
  EXPECT_GRPC_CODE(client_->Update(info, {"kind"}, nullptr), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GRPC_CODE(client_->Update(info, {"labels.k", "created_at"}, nullptr),
                   grpc::StatusCode::INVALID_ARGUMENT);
  (*info.mutable_labels())["huge"] = std::string(5000, 'h');
  EXPECT_GRPC_CODE(client_->Update(info, {}, nullptr), grpc::StatusCode::INVALID_ARGUMENT);
  info.set_name("");
  EXPECT_GRPC_CODE(client_->Update(info, {}, nullptr), grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<snapshots_v1::Info> infos;
  EXPECT_GRPC_CODE(client_->List({"name==\"open"}, &infos), grpc::StatusCode::INVALID_ARGUMENT);

  // Bytes that are not a valid request message at all.
  grpc::GenericStub generic(client_->channel());
  for (const std::string& method : {"/containerd.services.snapshots.v1.Snapshots/Prepare",
                                    "/containerd.services.snapshots.v1.Snapshots/Commit",
                                    "/containerd.services.snapshots.v1.Snapshots/Remove"}) {
    for (const std::string& garbage :
         {std::string("\xff\xff\xff\xff\xff", 5), std::string("\x12\x05\xc3\x28\xa0\xa1\xff", 7),
          std::string("\x12\x7f", 2)}) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      grpc::Slice slice(garbage);
      grpc::ByteBuffer request(&slice, 1), response;
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      grpc::Status status;
      grpc::StubOptions options;
      generic.UnaryCall(&ctx, method, options, &request, &response, [&](grpc::Status s) {
        std::lock_guard<std::mutex> l(mu);
        status = s;
        done = true;
        cv.notify_all();
      });
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return done; });
      EXPECT_FALSE(status.ok()) << method;
      EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    }
  }
  EXPECT_EQ(State(), before);
  EXPECT_TRUE(daemon_->running());

  ASSERT_GRPC_OK(client_->Prepare("cap", "", {{"big", std::string(4093, 'v')}}));
}

TEST_F(BadInputTest, KeysAreOpaqueAndNeverBecomePaths) {
  std::vector<std::string> outside_before = ListDir(tmp_.path());
  std::vector<std::string> keys = {"default/1/sha256:abc",
                                   "../../../../escape",
                                   "/absolute/../x",
                                   "..",
                                   ".",
                                   "a/../../b",
                                   std::string(4096, 'K'),
                                   "snapshots/1/fs",
                                   "new-XXXXXX",
                                   "with spaces\tand\nnewlines",
                                   "\xe2\x82\xac\xf0\x9f\x93\xa6 unicode"};
  std::string parent;
  for (size_t i = 0; i < keys.size(); ++i) {
    MountList mounts;
    ASSERT_GRPC_OK(client_->Prepare(keys[i], parent, {}, &mounts));
    ASSERT_FALSE(mounts.empty());
    snapshots_v1::Info info;
    ASSERT_GRPC_OK(client_->Stat(keys[i], &info));
    EXPECT_EQ(info.name(), keys[i]);
    if (i % 2 == 0) {
      std::string name = "committed " + keys[i];
      ASSERT_GRPC_OK(client_->Commit(name, keys[i]));
      parent = name;
    }
  }
  // Directories under snapshots/ are numeric ids only; nothing appeared anywhere else.
  for (const std::string& d : ListDir(SnapshotsDir())) {
    EXPECT_EQ(d.find_first_not_of("0123456789"), std::string::npos) << d;
  }
  EXPECT_EQ(ListDir(SnapshotsDir()).size(), keys.size());
  EXPECT_EQ(ListDir(tmp_.path()), outside_before);
  EXPECT_EQ(ListDir(daemon_->root()),
            (std::vector<std::string>{"lazypull.lock", "metadata.db", "metadata.db-shm",
                                      "metadata.db-wal", "snapshots"}));
  std::vector<snapshots_v1::Info> infos;
  ASSERT_GRPC_OK(
      client_->List({absl::StrCat("name==\"committed ", std::string(4096, 'K'), "\"")}, &infos));
  ASSERT_EQ(infos.size(), 1u);
}

}  // namespace
}  // namespace lazypull::testing
