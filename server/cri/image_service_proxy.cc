#include "server/cri/image_service_proxy.h"

#include <string.h>

#include <atomic>
#include <chrono>
#include <utility>
#include <vector>

#include "base/logging.h"
#include "k8s/cri/runtime/v1/api.pb.h"

namespace lazypull::cri {
namespace {

constexpr std::string_view kImageServiceV1 = "/runtime.v1.ImageService/";
constexpr std::string_view kImageServiceV1alpha2 = "/runtime.v1alpha2.ImageService/";
constexpr int kMaxMessageBytes = 16 << 20;  // containerd's and kubelet's gRPC limit

bool IsPullImage(std::string_view method) {
  return method == "/runtime.v1.ImageService/PullImage" ||
         method == "/runtime.v1alpha2.ImageService/PullImage";
}

// Metadata that gRPC itself manages on each hop; everything else is the caller's and is passed
// on.
bool IsTransportMetadata(std::string_view key) {
  return key.empty() || key[0] == ':' || key.starts_with("grpc-") || key == "te" ||
         key == "content-type" || key == "user-agent" || key == "host" || key == "authority";
}

void Wipe(std::string* s) {
  if (!s->empty()) explicit_bzero(s->data(), s->size());
  s->clear();
}

// The image and AuthConfig of a serialized PullImageRequest (the secrets in every temporary
// are wiped). False when the bytes do not parse: the call is forwarded anyway and containerd
// answers it.
bool ParsePullImage(const grpc::ByteBuffer& buffer, std::string* image,
                    std::optional<CriAuth>* auth) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  runtime::v1::PullImageRequest request;
  bool parsed = request.ParseFromString(bytes);
  Wipe(&bytes);
  if (!parsed) return false;
  *image = request.image().image();
  if (request.has_auth()) {
    runtime::v1::AuthConfig* a = request.mutable_auth();
    *auth = CriAuth{a->username(),       a->password(),       a->auth(),
                    a->server_address(), a->identity_token(), a->registry_token()};
    Wipe(a->mutable_password());
    Wipe(a->mutable_auth());
    Wipe(a->mutable_identity_token());
    Wipe(a->mutable_registry_token());
  }
  return true;
}

void WipeAuth(CriAuth& a) {
  Wipe(&a.password);
  Wipe(&a.auth);
  Wipe(&a.identity_token);
  Wipe(&a.registry_token);
}

}  // namespace

bool IsImageServiceMethod(std::string_view method) {
  return method.starts_with(kImageServiceV1) || method.starts_with(kImageServiceV1alpha2);
}

// One forwarded call: the server side (caller → lazypull) is this reactor, the client side
// (lazypull → containerd) is `backend_`. Two chains pump messages one at a time: requests
// (caller read → backend write → caller read ...) and responses (backend read → caller write →
// backend read ...). Each chain holds the backend stream open (a gRPC "hold") until it ends, so
// the backend's OnDone — which finishes the caller's call with the backend's status — comes
// only when neither chain can touch either stream again. Deletes itself when both sides are
// done.
namespace {

// Answers a call it could not forward with `status` (e.g. out of memory setting it up).
class FailedCall final : public grpc::ServerGenericBidiReactor {
 public:
  explicit FailedCall(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

class ImageServiceProxy::ForwardedCall final : public grpc::ServerGenericBidiReactor {
 public:
  ForwardedCall(ImageServiceProxy* proxy, grpc::GenericCallbackServerContext* ctx)
      : proxy_(proxy), ctx_(ctx), method_(ctx->method()), backend_(this) {
    is_pull_ = IsPullImage(method_);
    if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
      client_ctx_.set_deadline(ctx->deadline());
    }
    for (const auto& [k, v] : ctx->client_metadata()) {
      std::string_view key(k.data(), k.size());
      if (!IsTransportMetadata(key)) {
        client_ctx_.AddMetadata(std::string(key), std::string(v.data(), v.size()));
      }
    }
    proxy_->stub_.PrepareBidiStreamingCall(&client_ctx_, method_, grpc::StubOptions(), &backend_);
    backend_.AddMultipleHolds(2);  // the request chain and the response chain
    StartRead(&to_backend_);
    backend_.StartRead(&from_backend_);
    backend_.StartCall();
  }

  // --- caller side: request chain ---
  void OnReadDone(bool ok) override {
    if (!ok) {  // the caller half-closed (or is gone): no more requests
      backend_.StartWritesDone();
      backend_.RemoveHold();
      return;
    }
    if (is_pull_ && !seen_request_) {
      // Keeping credentials is a side job: whatever it throws, the call is forwarded.
      try {
        RememberPullCredentials();
      } catch (const std::exception& e) {
        LogError("CRI PullImage credentials not kept: exception", {{"error", e.what()}});
      } catch (...) {
        LogError("CRI PullImage credentials not kept: unknown exception");
      }
    }
    seen_request_ = true;
    backend_.StartWrite(&to_backend_);
  }

  // --- caller side: response chain ---
  void OnWriteDone(bool ok) override {
    if (!ok) {  // the caller is gone
      client_ctx_.TryCancel();
      backend_.RemoveHold();
      return;
    }
    from_backend_.Clear();
    backend_.StartRead(&from_backend_);
  }

  void OnCancel() override { client_ctx_.TryCancel(); }
  void OnDone() override { Unref(); }

 private:
  class Backend final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Backend(ForwardedCall* call) : call_(call) {}
    void OnReadDone(bool ok) override { call_->OnBackendReadDone(ok); }
    void OnWriteDone(bool ok) override { call_->OnBackendWriteDone(ok); }
    void OnDone(const grpc::Status& s) override { call_->OnBackendDone(s); }

   private:
    ForwardedCall* const call_;
  };

  void OnBackendWriteDone(bool ok) {
    if (!ok) {  // the backend call is over; its status finishes ours
      backend_.RemoveHold();
      return;
    }
    to_backend_.Clear();
    StartRead(&to_backend_);
  }

  void OnBackendReadDone(bool ok) {
    if (!ok) {  // no more responses
      backend_.RemoveHold();
      return;
    }
    StartWrite(&from_backend_);
  }

  // Both chains have ended: nothing is pending on either side.
  void OnBackendDone(const grpc::Status& status) {
    for (const auto& [k, v] : client_ctx_.GetServerTrailingMetadata()) {
      std::string_view key(k.data(), k.size());
      if (!IsTransportMetadata(key)) {
        ctx_->AddTrailingMetadata(std::string(key), std::string(v.data(), v.size()));
      }
    }
    if (is_pull_) {
      try {
        FinishPull(status);
      } catch (...) {
        // Only bookkeeping and a log line failed; the caller still gets the backend's status.
      }
    }
    Finish(status);
    Unref();
  }

  void RememberPullCredentials() {
    std::optional<CriAuth> auth;
    if (!ParsePullImage(to_backend_, &image_, &auth)) {
      LogWarn("CRI PullImage request does not parse; forwarding it as is", {{"method", method_}});
      return;
    }
    if (!auth.has_value()) return;
    absl::StatusOr<CriKeychain::Ticket> ticket = proxy_->keychain_->Remember(image_, *auth);
    WipeAuth(*auth);
    if (!ticket.ok()) {
      LogWarn("CRI PullImage credentials not kept",
              {{"image", image_}, {"error", ticket.status().ToString()}});
      return;
    }
    ticket_ = *ticket;
  }

  void FinishPull(const grpc::Status& status) {
    if (!status.ok()) proxy_->keychain_->Forget(ticket_);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started_)
                  .count();
    nlohmann::json fields = {{"image", image_},
                             {"credentials", ticket_ != 0},
                             {"code", static_cast<int>(status.error_code())},
                             {"duration_ms", ms}};
    if (status.ok()) {
      LogInfo("CRI PullImage forwarded", fields);
    } else {
      fields["error"] = status.error_message();
      LogWarn("CRI PullImage failed in the backend CRI", fields);
    }
  }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  ImageServiceProxy* const proxy_;
  grpc::GenericCallbackServerContext* const ctx_;
  const std::string method_;  // outlives the backend call (gRPC keeps a pointer to it)
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  bool is_pull_ = false;
  bool seen_request_ = false;  // request chain only
  std::string image_;
  CriKeychain::Ticket ticket_ = 0;

  grpc::ClientContext client_ctx_;
  Backend backend_;
  grpc::ByteBuffer to_backend_;    // request chain's message in flight
  grpc::ByteBuffer from_backend_;  // response chain's message in flight
  std::atomic<int> refs_{2};       // caller side OnDone + backend OnDone
};

ImageServiceProxy::ImageServiceProxy(std::shared_ptr<grpc::Channel> backend, CriKeychain* keychain)
    : backend_(std::move(backend)), stub_(backend_), keychain_(keychain) {}

ImageServiceProxy::~ImageServiceProxy() = default;

std::shared_ptr<grpc::Channel> ImageServiceProxy::NewBackendChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

grpc::ServerGenericBidiReactor* ImageServiceProxy::CreateReactor(
    grpc::GenericCallbackServerContext* ctx) {
  if (!IsImageServiceMethod(ctx->method())) {
    return grpc::CallbackGenericService::CreateReactor(ctx);  // UNIMPLEMENTED, as before
  }
  try {
    return new ForwardedCall(this, ctx);
  } catch (const std::exception& e) {
    LogError("CRI call not forwarded: exception", {{"method", ctx->method()}, {"error", e.what()}});
    return new FailedCall(
        grpc::Status(grpc::StatusCode::INTERNAL, std::string("lazypull CRI proxy: ") + e.what()));
  }
}

}  // namespace lazypull::cri
