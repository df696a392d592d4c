// FaultProxy: an HTTP/1.1 proxy on 127.0.0.1 in front of one upstream (a registry), injecting
// one fault at a time into matching requests: an error status (500/503/429 + Retry-After), a
// connection dropped mid-body, a truncated body (shorter Content-Length), a flipped byte, a
// Range header stripped (so the upstream answers 200 with the full blob), a redirect to
// another port, or a Basic-auth challenge. Every request is recorded for assertions (e.g. that
// Authorization never reached another host).
//
// The proxy forwards each request on a fresh upstream connection and buffers the response
// (test blobs are small), then re-sends it with Content-Length and keep-alive, so the client
// side sees connection reuse. Thread-safe; stops (closing every connection) on destruction.
#ifndef LAZYPULL_TESTS_HARNESS_FAULT_PROXY_H_
#define LAZYPULL_TESTS_HARNESS_FAULT_PROXY_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::testing {

enum class FaultKind {
  kStatus,        // answer `status` (with Retry-After if set) instead of forwarding
  kDropMidBody,   // send headers and the first half of the body, then close the connection
  kTruncateBody,  // send only the first half of the body, with a matching Content-Length
  kCorruptByte,   // flip one byte of the body (at corrupt_offset, default: the middle)
  kIgnoreRange,   // strip the Range header before forwarding (upstream answers 200 full)
  kWrongRange,    // forward "bytes=0-<len-1>" instead of a "bytes=A-B" Range: the upstream
                  // answers 206 for other bytes than asked (Content-Range 0-...)
  kRedirect,      // answer 307 to http://127.0.0.1:<redirect_port><same path and query>
  kRequireBasic,  // answer 401 + WWW-Authenticate: Basic unless Authorization is present
  kStall,         // accept the request and answer nothing, holding the connection open until
                  // the rules are cleared or the proxy stops (a stalled registry)
};

struct FaultRule {
  FaultKind kind = FaultKind::kStatus;
  std::string method{};         // "" = any
  std::string path_contains{};  // "" = any
  int status = 503;
  std::string retry_after{};  // kStatus: value of Retry-After, "" = none
  int redirect_port = 0;
  // kRedirect: replaces the target's query string (e.g. a pre-signed URL's signature).
  std::string redirect_query{};
  int64_t corrupt_offset = -1;
  int times = 1;  // matching requests to affect; -1 = all
};

struct RecordedRequest {
  std::string method;
  std::string target;                          // path + query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string fault;                           // "" or the fault applied
};

class FaultProxy {
 public:
  // Listens on an ephemeral 127.0.0.1 port, forwarding to 127.0.0.1:upstream_port.
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(int upstream_port);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  std::string host() const;  // "127.0.0.1:PORT"

  // Rules are checked in order; the first matching rule with times left applies.
  void AddRule(const FaultRule& rule);
  void ClearRules();
  std::vector<RecordedRequest> Requests() const;
  void ClearRequests();
  int connections_accepted() const { return connections_.load(); }
  // Number of faults injected so far.
  int faults_applied() const { return faults_.load(); }
  // Response body bytes the kernel accepted from this proxy (a client that abandons a body
  // stops this from growing, give or take the sockets' buffers).
  uint64_t body_bytes_sent() const { return body_bytes_sent_.load(); }

 private:
  FaultProxy() = default;
  void AcceptLoop();
  void Serve(int fd);
  bool TakeRule(const std::string& method, const std::string& target, bool has_authorization,
                FaultRule* out);

  int port_ = 0;
  int upstream_port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> faults_{0};
  std::atomic<uint64_t> body_bytes_sent_{0};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<FaultRule> rules_;
  std::vector<RecordedRequest> requests_;
  std::set<int> client_fds_;
  std::vector<std::thread> workers_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_FAULT_PROXY_H_
