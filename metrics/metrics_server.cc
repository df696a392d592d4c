#include "metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <exception>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "prometheus/exposer.h"

namespace lazypull::metrics {
namespace {

absl::Status BadAddress(std::string_view address, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "metrics address '", std::string(address), "' ", std::string(why),
      " (want IPV4:PORT, [IPV6]:PORT, localhost:PORT or :PORT; \"\" turns metrics off)"));
}

// Binds (and closes) a socket on the address the way civetweb will, to learn why listening
// fails: civetweb itself only says that it could not start.
absl::Status CheckCanListen(const ListenAddress& a) {
  UniqueFd fd(::socket(a.ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");
  int one = 1;
  // As civetweb does: connections of a previous instance in TIME_WAIT do not block a restart.
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (a.ipv6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(static_cast<uint16_t>(a.port));
    ::inet_pton(AF_INET6, a.host.c_str(), &sa.sin6_addr);
    rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(a.port));
    ::inet_pton(AF_INET, a.host.c_str(), &sa.sin_addr);
    rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  }
  if (rc == 0 && ::listen(fd.get(), 1) == 0) return absl::OkStatus();
  const int err = errno;
  std::string hint = err == EADDRINUSE ? " (another process listens on this port)" : "";
  return absl::FailedPreconditionError(
      absl::StrCat("cannot serve metrics on ", a.ToString(), ": ", std::strerror(err), hint,
                   "; set [metrics] address to a free port, or \"\" to turn metrics off"));
}

}  // namespace

std::string ListenAddress::ToString() const {
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view address) {
  ListenAddress a;
  std::string_view host, port;
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return BadAddress(address, "is malformed");
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
    a.ipv6 = true;
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) return BadAddress(address, "has no port");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return BadAddress(address, "needs brackets around an IPv6 address");
    }
  }
  if (!absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &a.port) || a.port < 1 ||
      a.port > 65535) {
    return BadAddress(address, "has no valid port (1-65535)");
  }
  if (host.empty()) host = a.ipv6 ? "::" : "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  a.host = std::string(host);
  unsigned char buf[sizeof(in6_addr)];
  if (::inet_pton(a.ipv6 ? AF_INET6 : AF_INET, a.host.c_str(), buf) != 1) {
    return BadAddress(address, "does not name a numeric IP address");
  }
  return a;
}

absl::StatusOr<std::string> ReplaceListenHost(std::string_view address, std::string_view host_arg) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(address);
  if (!parsed.ok()) return parsed.status();
  std::string host(host_arg);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const bool ipv6 = host.find(':') != std::string::npos;
  const std::string joined =
      ipv6 ? absl::StrCat("[", host, "]:", parsed->port) : absl::StrCat(host, ":", parsed->port);
  absl::StatusOr<ListenAddress> replaced = ParseListenAddress(joined);
  if (!replaced.ok() || host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics host \"", host, "\" is not a numeric IPv4 or IPv6 address"));
  }
  return replaced->ToString();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(std::string_view address,
                                                                    const Metrics& metrics) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(address);
  if (!parsed.ok()) return parsed.status();
  if (absl::Status s = CheckCanListen(*parsed); !s.ok()) return s;
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->address_ = *parsed;
  server->collectable_ = metrics.collectable();
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", parsed->ToString(), "num_threads", "2"});
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot serve metrics on ", parsed->ToString(), ": ", e.what()));
  }
  server->exposer_->RegisterCollectable(server->collectable_);
  LogInfo("serving metrics", {{"url", absl::StrCat("http://", parsed->ToString(), "/metrics")}});
  return server;
}

MetricsServer::~MetricsServer() = default;

}  // namespace lazypull::metrics
