// RequestObserver: sees every HTTP exchange a RegistryClient makes — each attempt, retry and
// redirect hop — so an owner can count and time them (the daemon's Prometheus metrics) without
// the registry module knowing about metrics.
#ifndef LAZYPULL_FETCHER_REGISTRY_REQUEST_OBSERVER_H_
#define LAZYPULL_FETCHER_REGISTRY_REQUEST_OBSERVER_H_

#include <chrono>
#include <cstdint>
#include <string_view>

namespace lazypull::registry {

struct RequestEvent {
  std::string_view method;  // "GET", "HEAD", ...
  // "host[:port]" the request went to: the registry, a mirror, or a redirect's target (blob
  // storage).
  std::string_view host;
  // HTTP status of the response; 0 when none arrived (connect error, timeout, cancellation).
  int status = 0;
  uint64_t body_bytes = 0;  // response body bytes received
  std::chrono::nanoseconds duration{0};
};

class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  // Called on the requesting thread after each exchange. Implementations must be thread-safe,
  // cheap and non-blocking, and must not throw.
  virtual void OnResponse(const RequestEvent& event) = 0;
};

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_REQUEST_OBSERVER_H_
