// ImageServiceProxy inside a real Daemon (same socket as the Snapshots service) in front of a
// fake CRI backend on a unix socket: every ImageService call reaches the backend byte for byte
// with the caller's metadata and deadline, and the backend's answer — messages, status code,
// message, details, trailing metadata — reaches the caller unchanged. PullImage's AuthConfig is
// in the keychain while the backend pulls, and gone again if the pull fails.
#include "server/cri/image_service_proxy.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "k8s/cri/runtime/v1/api.grpc.pb.h"
#include "server/daemon.h"
#include "tests/harness/test_env.h"

namespace lazypull::cri {
namespace {

using lazypull::testing::TempDir;
using lazypull::testing::WaitUntil;

std::string Bytes(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(b.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// What the fake backend saw of one call.
struct SeenCall {
  std::string method;
  std::vector<std::string> requests;
  std::multimap<std::string, std::string> metadata;
  std::chrono::system_clock::time_point deadline;
};

// How the fake backend answers one call.
struct Answer {
  std::vector<std::string> responses;
  grpc::Status status = grpc::Status::OK;
  std::multimap<std::string, std::string> trailers;
  bool hang = false;  // answer nothing until cancelled
};

Answer Reply(const std::string& response) {
  Answer a;
  a.responses.push_back(response);
  return a;
}

// A CRI backend that answers every method from a script and records what it saw.
class FakeCri final : public grpc::CallbackGenericService {
 public:
  // Called after a call's requests are read, before answering.
  std::function<void(const SeenCall&)> on_call;
  std::function<Answer(const SeenCall&)> answer = [](const SeenCall&) { return Answer{}; };

  std::vector<SeenCall> calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  int cancelled() const { return cancelled_.load(); }

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    return new Reactor(this, ctx);
  }

 private:
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    Reactor(FakeCri* fake, grpc::GenericCallbackServerContext* ctx) : fake_(fake), ctx_(ctx) {
      seen_.method = ctx->method();
      seen_.deadline = ctx->deadline();
      for (const auto& [k, v] : ctx->client_metadata()) {
        seen_.metadata.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
      }
      StartRead(&in_);
    }
    void OnReadDone(bool ok) override {
      if (ok) {
        seen_.requests.push_back(Bytes(in_));
        in_.Clear();
        StartRead(&in_);
        return;
      }
      {
        std::lock_guard<std::mutex> l(fake_->mu_);
        fake_->calls_.push_back(seen_);
      }
      if (fake_->on_call) fake_->on_call(seen_);
      answer_ = fake_->answer(seen_);
      if (answer_.hang) return;  // OnCancel finishes
      Next();
    }
    void OnWriteDone(bool ok) override {
      if (!ok) return Finish(grpc::Status::CANCELLED);
      Next();
    }
    void OnCancel() override {
      fake_->cancelled_++;
      if (answer_.hang) Finish(grpc::Status::CANCELLED);
    }
    void OnDone() override { delete this; }

   private:
    void Next() {
      if (next_ < answer_.responses.size()) {
        out_ = Buffer(answer_.responses[next_++]);
        StartWrite(&out_);
        return;
      }
      for (const auto& [k, v] : answer_.trailers) ctx_->AddTrailingMetadata(k, v);
      Finish(answer_.status);
    }
    FakeCri* fake_;
    grpc::GenericCallbackServerContext* ctx_;
    SeenCall seen_;
    Answer answer_;
    size_t next_ = 0;
    grpc::ByteBuffer in_, out_;
  };

  std::mutex mu_;
  std::vector<SeenCall> calls_;
  std::atomic<int> cancelled_{0};
};

std::unique_ptr<grpc::Server> ServeFake(FakeCri* fake, const std::string& socket) {
  grpc::ServerBuilder b;
  b.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  b.RegisterCallbackGenericService(fake);
  return b.BuildAndStart();
}

runtime::v1::PullImageRequest PullRequest(const std::string& image, const std::string& user,
                                          const std::string& password) {
  runtime::v1::PullImageRequest req;
  req.mutable_image()->set_image(image);
  req.mutable_auth()->set_username(user);
  req.mutable_auth()->set_password(password);
  return req;
}

class ImageServiceProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_socket_ = dir_.Sub("cri.sock");
    backend_ = ServeFake(&fake_, backend_socket_);
    ASSERT_NE(backend_, nullptr);
    keychain_ = std::make_unique<CriKeychain>(std::chrono::seconds(600));
    proxy_ = std::make_unique<ImageServiceProxy>(
        ImageServiceProxy::NewBackendChannel("unix:" + backend_socket_), keychain_.get());
    DaemonConfig config;
    config.root = dir_.Sub("root");
    config.address = dir_.Sub("lp.sock");
    config.metrics_address = "";  // tests run in parallel: no shared default port
    auto daemon = Daemon::Start(config, Daemon::RemoteLayerFactory(), proxy_.get());
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    channel_ = grpc::CreateChannel("unix:" + config.address, grpc::InsecureChannelCredentials());
    images_ = runtime::v1::ImageService::NewStub(channel_);
  }
  void TearDown() override {
    if (daemon_) daemon_->Shutdown(absl::Seconds(5));
    daemon_.reset();
    if (backend_) backend_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // A raw call through lazypull: `requests` as bytes, every response's bytes back.
  grpc::Status RawCall(const std::string& method, const std::vector<std::string>& requests,
                       std::vector<std::string>* responses,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    grpc::CompletionQueue cq;
    auto call = stub.PrepareCall(&ctx, method, &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(1));
    cq.Next(&tag, &ok);
    for (const std::string& r : requests) {
      grpc::ByteBuffer b = Buffer(r);
      call->Write(b, reinterpret_cast<void*>(2));
      cq.Next(&tag, &ok);
    }
    call->WritesDone(reinterpret_cast<void*>(3));
    cq.Next(&tag, &ok);
    while (true) {
      grpc::ByteBuffer in;
      call->Read(&in, reinterpret_cast<void*>(4));
      cq.Next(&tag, &ok);
      if (!ok) break;
      responses->push_back(Bytes(in));
    }
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    cq.Next(&tag, &ok);
    return status;
  }

  TempDir dir_{"lpcri"};
  FakeCri fake_;
  std::string backend_socket_;
  std::unique_ptr<grpc::Server> backend_;
  std::unique_ptr<CriKeychain> keychain_;
  std::unique_ptr<ImageServiceProxy> proxy_;
  std::unique_ptr<Daemon> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<runtime::v1::ImageService::Stub> images_;
};

TEST_F(ImageServiceProxyTest, PullImageIsForwardedWithCredentialsKeptDuringThePull) {
  std::optional<registry::HostCredentials> during;
  fake_.on_call = [&](const SeenCall&) {
    during = keychain_->Find("127.0.0.1:5000", "team/app", "127.0.0.1:5000");
  };
  runtime::v1::PullImageResponse answer;
  answer.set_image_ref("sha256:" + std::string(64, 'c'));
  fake_.answer = [&](const SeenCall&) { return Reply(answer.SerializeAsString()); };

  auto req = PullRequest("127.0.0.1:5000/team/app:v1", "alice", "pw-in-flight");
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-kubelet-trace", "abc123");
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  runtime::v1::PullImageResponse resp;
  grpc::Status s = images_->PullImage(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_EQ(resp.image_ref(), answer.image_ref());

  auto calls = fake_.calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].method, "/runtime.v1.ImageService/PullImage");
  ASSERT_EQ(calls[0].requests.size(), 1u);
  EXPECT_EQ(calls[0].requests[0], req.SerializeAsString());
  auto md = calls[0].metadata.find("x-kubelet-trace");
  ASSERT_NE(md, calls[0].metadata.end());
  EXPECT_EQ(md->second, "abc123");
  // The caller's deadline travels with the call.
  auto remaining = calls[0].deadline - std::chrono::system_clock::now();
  EXPECT_LT(remaining, std::chrono::seconds(31));
  EXPECT_GT(remaining, std::chrono::seconds(20));

  ASSERT_TRUE(during.has_value()) << "credentials were not in the keychain during the pull";
  EXPECT_EQ(during->username, "alice");
  EXPECT_EQ(during->password, "pw-in-flight");
  EXPECT_TRUE(keychain_->Find("127.0.0.1:5000", "team/app", "127.0.0.1:5000").has_value());
}

TEST_F(ImageServiceProxyTest, ErrorsComeBackUnchangedAndFailedPullForgetsCredentials) {
  Answer a;
  a.status = grpc::Status(grpc::StatusCode::UNKNOWN,
                          "failed to pull and unpack image \"127.0.0.1:5000/team/app:v1\": 401",
                          std::string("\x08\x02\x12\x03xyz", 7));
  a.trailers.emplace("x-backend-trailer", "t1");
  a.trailers.emplace("x-backend-bin", std::string("\0\1\2", 3));
  fake_.answer = [&](const SeenCall&) { return a; };

  auto req = PullRequest("127.0.0.1:5000/team/app:v1", "alice", "wrong");
  grpc::ClientContext ctx;
  runtime::v1::PullImageResponse resp;
  grpc::Status s = images_->PullImage(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), a.status.error_code());
  EXPECT_EQ(s.error_message(), a.status.error_message());
  EXPECT_EQ(s.error_details(), a.status.error_details());
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto t = trailers.find("x-backend-trailer");
  ASSERT_NE(t, trailers.end());
  EXPECT_EQ(std::string(t->second.data(), t->second.size()), "t1");
  auto b = trailers.find("x-backend-bin");
  ASSERT_NE(b, trailers.end());
  EXPECT_EQ(std::string(b->second.data(), b->second.size()), std::string("\0\1\2", 3));
  EXPECT_FALSE(keychain_->Find("127.0.0.1:5000", "team/app", "127.0.0.1:5000").has_value());

  // Every code passes through as is.
  for (grpc::StatusCode code :
       {grpc::StatusCode::NOT_FOUND, grpc::StatusCode::UNAVAILABLE,
        grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::PERMISSION_DENIED}) {
    fake_.answer = [code](const SeenCall&) {
      Answer e;
      e.status = grpc::Status(code, "backend says " + std::to_string(code));
      return e;
    };
    grpc::ClientContext c2;
    runtime::v1::ImageStatusRequest sreq;
    sreq.mutable_image()->set_image("x");
    runtime::v1::ImageStatusResponse sresp;
    grpc::Status s2 = images_->ImageStatus(&c2, sreq, &sresp);
    EXPECT_EQ(s2.error_code(), code);
    EXPECT_EQ(s2.error_message(), "backend says " + std::to_string(code));
  }
}

TEST_F(ImageServiceProxyTest, EveryImageServiceCallIsForwardedByteForByte) {
  // Fields lazypull's trimmed proto does not know (here 99 in the request, 77 in the answer)
  // pass through: the bytes are forwarded, not re-encoded.
  runtime::v1::ListImagesResponse list;
  list.add_images()->set_id("sha256:1");
  std::string answer = list.SerializeAsString() + std::string("\xea\x04\x03new", 6);  // field 77
  fake_.answer = [&](const SeenCall&) { return Reply(answer); };
  for (const char* method :
       {"/runtime.v1.ImageService/ListImages", "/runtime.v1.ImageService/ImageStatus",
        "/runtime.v1.ImageService/RemoveImage", "/runtime.v1.ImageService/ImageFsInfo",
        "/runtime.v1.ImageService/SomethingNewer", "/runtime.v1alpha2.ImageService/ListImages"}) {
    std::string request = std::string("\x0a\x00", 2) + std::string("\x9a\x06\x02hi", 5);
    std::vector<std::string> responses;
    grpc::Status s = RawCall(method, {request}, &responses);
    ASSERT_TRUE(s.ok()) << method << ": " << s.error_message();
    ASSERT_EQ(responses.size(), 1u) << method;
    EXPECT_EQ(responses[0], answer) << method;
    auto calls = fake_.calls();
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(calls.back().method, method);
    ASSERT_EQ(calls.back().requests.size(), 1u);
    EXPECT_EQ(calls.back().requests[0], request) << method;
  }
}

TEST_F(ImageServiceProxyTest, StreamingAnswersAreForwarded) {
  fake_.answer = [](const SeenCall&) {
    Answer a;
    for (int i = 0; i < 5; ++i) {
      runtime::v1::ListImagesResponse part;
      part.add_images()->set_id("sha256:" + std::to_string(i));
      a.responses.push_back(part.SerializeAsString());
    }
    return a;
  };
  std::vector<std::string> responses;
  grpc::Status s = RawCall("/runtime.v1.ImageService/StreamImages", {""}, &responses);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(responses.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    runtime::v1::ListImagesResponse part;
    ASSERT_TRUE(part.ParseFromString(responses[i]));
    EXPECT_EQ(part.images(0).id(), "sha256:" + std::to_string(i));
  }
}

TEST_F(ImageServiceProxyTest, V1alpha2PullImageAlsoFillsTheKeychain) {
  fake_.answer = [](const SeenCall&) { return Reply(""); };
  std::vector<std::string> responses;
  auto req = PullRequest("reg.example/team/old-kubelet:v1", "bob", "pw");
  grpc::Status s =
      RawCall("/runtime.v1alpha2.ImageService/PullImage", {req.SerializeAsString()}, &responses);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto c = keychain_->Find("reg.example", "team/old-kubelet", "reg.example");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->username, "bob");
}

TEST_F(ImageServiceProxyTest, OtherServicesStayUnimplementedAndSnapshotsStillWork) {
  std::vector<std::string> responses;
  grpc::Status s = RawCall("/runtime.v1.RuntimeService/Version", {""}, &responses);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_TRUE(fake_.calls().empty()) << "a RuntimeService call reached the backend";

  auto snapshots = containerd::services::snapshots::v1::Snapshots::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.AddMetadata("containerd-namespace", "default");
  containerd::services::snapshots::v1::StatSnapshotRequest req;
  req.set_snapshotter("lazypull");
  req.set_key("missing");
  containerd::services::snapshots::v1::StatSnapshotResponse resp;
  EXPECT_EQ(snapshots->Stat(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ImageServiceProxyTest, CallerDeadlineCancelsTheBackendCall) {
  fake_.answer = [](const SeenCall&) {
    Answer a;
    a.hang = true;
    return a;
  };
  std::vector<std::string> responses;
  grpc::Status s = RawCall("/runtime.v1.ImageService/PullImage",
                           {PullRequest("reg.io/a:v1", "u", "p").SerializeAsString()}, &responses,
                           std::chrono::milliseconds(500));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitUntil([&] { return fake_.cancelled() > 0; }));
  EXPECT_EQ(fake_.cancelled(), 1);
  EXPECT_FALSE(keychain_->Find("reg.io", "a", "reg.io").has_value());
}

TEST_F(ImageServiceProxyTest, DaemonShutdownEndsForwardedCallsInFlight) {
  fake_.answer = [](const SeenCall&) {
    Answer a;
    a.hang = true;
    return a;
  };
  grpc::Status result;
  std::thread caller([&] {
    std::vector<std::string> responses;
    result = RawCall("/runtime.v1.ImageService/PullImage",
                     {PullRequest("reg.io/a:v1", "u", "p").SerializeAsString()}, &responses,
                     std::chrono::seconds(60));
  });
  if (!WaitUntil([&] { return !fake_.calls().empty(); })) {
    daemon_->Shutdown(absl::Milliseconds(200));  // so `caller` can be joined
    caller.join();
    FAIL() << "the call never reached the backend";
  }
  auto started = std::chrono::steady_clock::now();
  daemon_->Shutdown(absl::Milliseconds(200));
  caller.join();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
  EXPECT_FALSE(result.ok());
  // The backend learns of the cancellation asynchronously.
  EXPECT_TRUE(WaitUntil([&] { return fake_.cancelled() > 0; }));
  EXPECT_EQ(fake_.cancelled(), 1);
}

TEST_F(ImageServiceProxyTest, ConcurrentPulls) {
  fake_.answer = [](const SeenCall& call) {
    runtime::v1::PullImageRequest req;
    req.ParseFromString(call.requests.at(0));
    runtime::v1::PullImageResponse resp;
    resp.set_image_ref(req.image().image());
    return Reply(resp.SerializeAsString());
  };
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 10; ++j) {
        std::string image = "reg.io/app" + std::to_string(i) + ":v" + std::to_string(j);
        grpc::ClientContext ctx;
        runtime::v1::PullImageResponse resp;
        grpc::Status s =
            images_->PullImage(&ctx, PullRequest(image, "u" + std::to_string(i), "p"), &resp);
        if (s.ok() && resp.image_ref() == image) good++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 160);
  for (int i = 0; i < 16; ++i) {
    auto c = keychain_->Find("reg.io", "app" + std::to_string(i), "reg.io");
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->username, "u" + std::to_string(i));
  }
}

TEST_F(ImageServiceProxyTest, BackendDownIsUnavailableThenRecovers) {
  backend_->Shutdown(std::chrono::system_clock::now());
  backend_.reset();
  ::unlink(backend_socket_.c_str());
  grpc::ClientContext ctx;
  runtime::v1::ImageFsInfoResponse resp;
  grpc::Status s = images_->ImageFsInfo(&ctx, runtime::v1::ImageFsInfoRequest(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();

  FakeCri restarted;  // a generic service can be registered with one server only
  restarted.answer = [](const SeenCall&) { return Reply(""); };
  auto server = ServeFake(&restarted, backend_socket_);
  ASSERT_NE(server, nullptr);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    grpc::ClientContext c2;
    s = images_->ImageFsInfo(&c2, runtime::v1::ImageFsInfoRequest(), &resp);
    if (s.ok() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(restarted.calls().empty());
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace lazypull::cri
