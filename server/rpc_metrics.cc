#include "server/rpc_metrics.h"

#include <string_view>

#include "absl/time/clock.h"

namespace lazypull {
namespace {

constexpr std::string_view kSnapshotsService = "/containerd.services.snapshots.v1.Snapshots/";

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(metrics::Metrics* metrics, std::string_view method)
      : metrics_(metrics), method_(method), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      metrics_->RecordSnapshotRpc(method_, static_cast<absl::StatusCode>(status.error_code()),
                                  absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  metrics::Metrics* metrics_;
  std::string_view method_;  // points into the server's static method name
  absl::Time start_;
};

class RpcMetricsFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(std::shared_ptr<metrics::Metrics> metrics)
      : metrics_(std::move(metrics)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    std::string_view method = info->method() != nullptr ? info->method() : "";
    if (method.substr(0, kSnapshotsService.size()) != kSnapshotsService) return nullptr;
    return new RpcMetricsInterceptor(metrics_.get(), method.substr(kSnapshotsService.size()));
  }

 private:
  std::shared_ptr<metrics::Metrics> metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRpcMetricsInterceptor(
    std::shared_ptr<metrics::Metrics> metrics) {
  return std::make_unique<RpcMetricsFactory>(std::move(metrics));
}

}  // namespace lazypull
