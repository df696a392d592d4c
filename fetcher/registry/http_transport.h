// HttpTransport: the narrow network seam of the registry client. One call = one HTTP exchange
// (no redirects followed, no retries, no auth logic), so a test can substitute any fault and
// the client's policies stay testable. CurlTransport is the real implementation.
#ifndef LAZYPULL_FETCHER_REGISTRY_HTTP_TRANSPORT_H_
#define LAZYPULL_FETCHER_REGISTRY_HTTP_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::registry {

struct TlsOptions {
  bool skip_verify = false;
  std::vector<std::string> ca_files;  // added to the system CAs
  // (certificate, key) PEM file pairs; key may be empty when the cert file holds it.
  std::vector<std::pair<std::string, std::string>> client_pairs;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse;

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, PATCH, DELETE
  std::string url;
  HttpHeaders headers;    // may include Authorization (never logged)
  std::string_view body;  // request body; must outlive Send()
  TlsOptions tls;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds timeout{60000};  // whole exchange; 0 = none
  // Abort when slower than `low_speed_bytes` per second for `low_speed_time` (a registry that
  // trickles bytes or stalls; guards bodies without a total timeout). 0 = no limit.
  std::chrono::milliseconds low_speed_time{30000};
  uint64_t low_speed_bytes = 1024;
  // When set, the body of a 2xx response is streamed here instead of stored, with the
  // response's status and headers in `head` (its body stays empty); return false to stop the
  // transfer early (the response then has stopped_by_sink = true and is OK).
  std::function<bool(const HttpResponse& head, std::string_view data)> body_sink;
  // When set, called once for a 2xx response as soon as its status and headers are in, before
  // any body byte is read; false stops the transfer there (the response then has
  // stopped_by_sink = true, body_bytes = 0, and is OK): an answer that is not worth its body
  // (a whole blob where a range was asked) costs no more than what the socket already held.
  std::function<bool(const HttpResponse& head)> head_check;
  // Non-2xx bodies (and 2xx ones without a sink) beyond this are an error.
  uint64_t max_body_bytes = 64ull << 20;
  // Polled during the exchange (at least about once a second, even while the server sends
  // nothing); true aborts it with Cancelled. Empty = never.
  std::function<bool()> cancelled;
};

struct HttpResponse {
  int status = 0;
  HttpHeaders headers;      // names lower-cased, in arrival order
  std::string body;         // empty if streamed to body_sink
  uint64_t body_bytes = 0;  // bytes received (stored or streamed)
  bool stopped_by_sink = false;
  std::string http_version;  // "1.1", "2"

  // First value of header `lower_name`, or "" when absent.
  std::string Header(std::string_view lower_name) const;
  std::vector<std::string> Headers(std::string_view lower_name) const;
};

// Thread-safe: Send may be called concurrently.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // Performs one exchange. Any HTTP status is OK (the caller interprets it). Errors: Unavailable
  // for connection failures / resets / a body shorter than Content-Length, DeadlineExceeded for
  // timeouts, FailedPrecondition for TLS verification failures, Internal otherwise. Messages name
  // method and URL (never headers).
  virtual absl::StatusOr<HttpResponse> Send(const HttpRequest& request) = 0;
};

// `url` as it may appear in logs and error messages: without userinfo, query and fragment
// (pre-signed redirect URLs to blob storage carry credentials in their query string).
// "https://u:p@host/path?sig=x#f" -> "https://host/path?<redacted>".
std::string RedactUrl(std::string_view url);

// The libcurl transport: a pool of easy handles sharing DNS, TLS sessions and the connection
// cache (keep-alive, connection reuse), HTTP/2 over TLS when the server offers it.
std::unique_ptr<HttpTransport> NewCurlTransport();

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_HTTP_TRANSPORT_H_
