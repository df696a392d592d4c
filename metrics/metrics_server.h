// MetricsServer: serves a Metrics registry over HTTP at `GET /metrics` in the Prometheus text
// format, with prometheus-cpp's pull Exposer (civetweb, two threads). Besides lazypull's own
// families the endpoint carries the three the Exposer adds about itself
// (exposer_transferred_bytes_total, exposer_scrapes_total, exposer_request_latencies).
#ifndef LAZYPULL_METRICS_METRICS_SERVER_H_
#define LAZYPULL_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "metrics/metrics.h"

namespace prometheus {
class Exposer;
class Collectable;
}  // namespace prometheus

namespace lazypull::metrics {

// A listening address: "IPV4:PORT", "[IPV6]:PORT", "localhost:PORT" (= 127.0.0.1) or ":PORT"
// (= 0.0.0.0, every interface); PORT 1-65535. InvalidArgument naming the address otherwise.
struct ListenAddress {
  std::string host;  // numeric, without brackets
  int port = 0;
  bool ipv6 = false;
  std::string ToString() const;  // "127.0.0.1:9102", "[::1]:9102"
};
absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view address);
// `address` (as ParseListenAddress) with its host replaced by `host`: a numeric IPv4 or IPv6
// address, brackets optional (e.g. a node's IP from Kubernetes' downward API, status.hostIP).
// InvalidArgument naming the bad address or host.
absl::StatusOr<std::string> ReplaceListenHost(std::string_view address, std::string_view host);

class MetricsServer {
 public:
  // Starts serving `metrics` at `address` (see ParseListenAddress). FailedPrecondition naming
  // the address and the reason (e.g. "Address already in use") when it cannot listen, so a
  // daemon fails to start instead of silently running without metrics.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(std::string_view address,
                                                              const Metrics& metrics);
  // Stops serving; waits for a scrape in progress.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  const ListenAddress& address() const { return address_; }

 private:
  MetricsServer() = default;
  ListenAddress address_;
  std::shared_ptr<prometheus::Collectable> collectable_;  // the Exposer holds a weak_ptr
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace lazypull::metrics

#endif  // LAZYPULL_METRICS_METRICS_SERVER_H_
