// RPC metrics: a gRPC server interceptor that records every Snapshots API call (method,
// status code, latency from arrival to the status being sent) into the daemon's Metrics.
// Calls to other services on the same socket (the CRI proxy) are not recorded.
#ifndef LAZYPULL_SERVER_RPC_METRICS_H_
#define LAZYPULL_SERVER_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "metrics/metrics.h"

namespace lazypull {

// For ServerBuilder::experimental().SetInterceptorCreators. `metrics` is shared: it stays
// alive while the server may still call the interceptors.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRpcMetricsInterceptor(
    std::shared_ptr<metrics::Metrics> metrics);

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_RPC_METRICS_H_
