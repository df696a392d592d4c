#include "tests/harness/fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::testing {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads from `fd` into `buf` until it contains "\r\n\r\n". False on EOF/error.
bool ReadHead(int fd, std::string* buf, size_t* head_end) {
  while (true) {
    auto p = buf->find("\r\n\r\n");
    if (p != std::string::npos) {
      *head_end = p + 4;
      return true;
    }
    char tmp[65536];
    ssize_t n = ::recv(fd, tmp, sizeof(tmp), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf->append(tmp, static_cast<size_t>(n));
  }
}

struct Head {
  std::string first_line;
  std::vector<std::pair<std::string, std::string>> headers;  // original case
  std::string Get(const std::string& lower) const {
    for (const auto& [k, v] : headers) {
      if (Lower(k) == lower) return v;
    }
    return "";
  }
  void Remove(const std::string& lower) {
    headers.erase(std::remove_if(headers.begin(), headers.end(),
                                 [&](const auto& h) { return Lower(h.first) == lower; }),
                  headers.end());
  }
  std::string Serialize() const {
    std::string s = first_line + "\r\n";
    for (const auto& [k, v] : headers) s += k + ": " + v + "\r\n";
    return s + "\r\n";
  }
};

Head ParseHead(std::string_view text) {
  Head h;
  size_t pos = text.find("\r\n");
  h.first_line = std::string(text.substr(0, pos));
  pos += 2;
  while (pos < text.size()) {
    size_t e = text.find("\r\n", pos);
    if (e == std::string_view::npos || e == pos) break;
    std::string_view line = text.substr(pos, e - pos);
    auto c = line.find(':');
    if (c != std::string_view::npos) {
      std::string v(line.substr(c + 1));
      v.erase(0, v.find_first_not_of(" \t"));
      h.headers.emplace_back(std::string(line.substr(0, c)), v);
    }
    pos = e + 2;
  }
  return h;
}

std::string DecodeChunked(std::string_view in) {
  std::string out;
  size_t pos = 0;
  while (pos < in.size()) {
    size_t e = in.find("\r\n", pos);
    if (e == std::string_view::npos) break;
    size_t len = std::strtoul(std::string(in.substr(pos, e - pos)).c_str(), nullptr, 16);
    pos = e + 2;
    if (len == 0) break;
    out.append(in.substr(pos, len));
    pos += len + 2;
  }
  return out;
}

std::string Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 307:
      return "Temporary Redirect";
    case 401:
      return "Unauthorized";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

const char* KindName(FaultKind k) {
  switch (k) {
    case FaultKind::kStatus:
      return "status";
    case FaultKind::kDropMidBody:
      return "drop";
    case FaultKind::kTruncateBody:
      return "truncate";
    case FaultKind::kCorruptByte:
      return "corrupt";
    case FaultKind::kIgnoreRange:
      return "ignore-range";
    case FaultKind::kWrongRange:
      return "wrong-range";
    case FaultKind::kRedirect:
      return "redirect";
    case FaultKind::kRequireBasic:
      return "require-basic";
    case FaultKind::kStall:
      return "stall";
  }
  return "?";
}

}  // namespace

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(int upstream_port) {
  std::unique_ptr<FaultProxy> p(new FaultProxy());
  p->upstream_port_ = upstream_port;
  p->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (p->listen_fd_ < 0) return absl::InternalError("socket: " + std::string(strerror(errno)));
  int one = 1;
  setsockopt(p->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(p->listen_fd_, 128) != 0) {
    return absl::InternalError("bind/listen: " + std::string(strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  getsockname(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  p->port_ = ntohs(addr.sin_port);
  p->acceptor_ = std::thread([raw = p.get()] { raw->AcceptLoop(); });
  return p;
}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
}

std::string FaultProxy::host() const { return fmt::format("127.0.0.1:{}", port_); }

void FaultProxy::AddRule(const FaultRule& rule) {
  std::lock_guard<std::mutex> l(mu_);
  rules_.push_back(rule);
}

void FaultProxy::ClearRules() {
  std::lock_guard<std::mutex> l(mu_);
  rules_.clear();
}

std::vector<RecordedRequest> FaultProxy::Requests() const {
  std::lock_guard<std::mutex> l(mu_);
  return requests_;
}

void FaultProxy::ClearRequests() {
  std::lock_guard<std::mutex> l(mu_);
  requests_.clear();
}

bool FaultProxy::TakeRule(const std::string& method, const std::string& target,
                          bool has_authorization, FaultRule* out) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& r : rules_) {
    if (r.times == 0) continue;
    // An authorized request passes a Basic challenge rule; later rules still apply.
    if (r.kind == FaultKind::kRequireBasic && has_authorization) continue;
    if (!r.method.empty() && r.method != method) continue;
    if (!r.path_contains.empty() && target.find(r.path_contains) == std::string::npos) continue;
    if (r.times > 0) --r.times;
    *out = r;
    return true;
  }
  return false;
}

void FaultProxy::AcceptLoop() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;
    }
    connections_++;
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    client_fds_.insert(fd);
    workers_.emplace_back([this, fd] { Serve(fd); });
  }
}

void FaultProxy::Serve(int fd) {
  std::string buf;
  while (!stopping_) {
    size_t head_end = 0;
    if (!ReadHead(fd, &buf, &head_end)) break;
    Head req = ParseHead(std::string_view(buf).substr(0, head_end));
    size_t body_len = std::strtoull(req.Get("content-length").c_str(), nullptr, 10);
    while (buf.size() < head_end + body_len) {
      char tmp[65536];
      ssize_t n = ::recv(fd, tmp, sizeof(tmp), 0);
      if (n <= 0) goto done;
      buf.append(tmp, static_cast<size_t>(n));
    }
    {
      std::string req_body = buf.substr(head_end, body_len);
      buf.erase(0, head_end + body_len);
      std::string method = req.first_line.substr(0, req.first_line.find(' '));
      std::string target = req.first_line.substr(method.size() + 1);
      target = target.substr(0, target.rfind(' '));
      RecordedRequest rec{method, target, {}, ""};
      for (const auto& [k, v] : req.headers) rec.headers[Lower(k)] = v;
      FaultRule rule;
      bool faulty = TakeRule(method, target, !req.Get("authorization").empty(), &rule);
      if (faulty) {
        rec.fault = KindName(rule.kind);
        faults_++;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        requests_.push_back(rec);
      }
      if (faulty && rule.kind == FaultKind::kStall) {
        // Hold the connection, answering nothing, until the rules change or we stop.
        while (!stopping_) {
          {
            std::lock_guard<std::mutex> l(mu_);
            if (rules_.empty()) break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        break;  // then close it: the client sees the connection drop
      }
      if (faulty && (rule.kind == FaultKind::kStatus || rule.kind == FaultKind::kRedirect ||
                     rule.kind == FaultKind::kRequireBasic)) {
        int status = rule.kind == FaultKind::kStatus     ? rule.status
                     : rule.kind == FaultKind::kRedirect ? 307
                                                         : 401;
        std::string body = rule.kind == FaultKind::kStatus
                               ? R"({"errors":[{"code":"INJECTED","message":"fault proxy"}]})"
                               : "";
        std::string resp = fmt::format("HTTP/1.1 {} {}\r\nContent-Length: {}\r\n", status,
                                       Reason(status), body.size());
        if (!rule.retry_after.empty()) resp += "Retry-After: " + rule.retry_after + "\r\n";
        if (rule.kind == FaultKind::kRedirect) {
          std::string location = target;
          if (!rule.redirect_query.empty()) {
            location = location.substr(0, location.find('?')) + "?" + rule.redirect_query;
          }
          resp += fmt::format("Location: http://127.0.0.1:{}{}\r\n", rule.redirect_port, location);
        }
        if (rule.kind == FaultKind::kRequireBasic) {
          resp += "WWW-Authenticate: Basic realm=\"fault-proxy\"\r\n";
        }
        if (rule.kind == FaultKind::kStatus) resp += "Content-Type: application/json\r\n";
        resp += "\r\n" + body;
        if (!WriteAll(fd, resp)) break;
        continue;
      }
      // Forward on a fresh upstream connection.
      if (faulty && rule.kind == FaultKind::kIgnoreRange) req.Remove("range");
      if (faulty && rule.kind == FaultKind::kWrongRange) {
        // bytes=A-B -> bytes=0-(B-A): as many bytes, from elsewhere.
        std::string range = req.Get("range");
        uint64_t a = 0, b = 0;
        if (std::sscanf(range.c_str(), "bytes=%lu-%lu", &a, &b) == 2 && b >= a && a > 0) {
          req.Remove("range");
          req.headers.emplace_back("Range", fmt::format("bytes=0-{}", b - a));
        }
      }
      req.Remove("connection");
      req.headers.emplace_back("Connection", "close");
      int up = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(upstream_port_));
      if (up < 0 || ::connect(up, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        if (up >= 0) ::close(up);
        break;
      }
      WriteAll(up, req.Serialize() + req_body);
      std::string raw;
      char tmp[65536];
      while (true) {
        ssize_t n = ::recv(up, tmp, sizeof(tmp), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        raw.append(tmp, static_cast<size_t>(n));
      }
      ::close(up);
      auto he = raw.find("\r\n\r\n");
      if (he == std::string::npos) break;
      Head resp = ParseHead(std::string_view(raw).substr(0, he + 4));
      std::string body = raw.substr(he + 4);
      if (Lower(resp.Get("transfer-encoding")) == "chunked") body = DecodeChunked(body);
      resp.Remove("transfer-encoding");
      resp.Remove("connection");
      bool head_only = method == "HEAD";
      if (!head_only) {
        resp.Remove("content-length");
        size_t send_len = body.size();
        if (faulty && rule.kind == FaultKind::kTruncateBody) send_len = body.size() / 2;
        if (faulty && rule.kind == FaultKind::kCorruptByte && !body.empty()) {
          size_t off =
              rule.corrupt_offset >= 0 ? static_cast<size_t>(rule.corrupt_offset) : body.size() / 2;
          if (off < body.size()) body[off] = static_cast<char>(body[off] ^ 0x5a);
        }
        resp.headers.emplace_back(
            "Content-Length",
            std::to_string(faulty && rule.kind == FaultKind::kDropMidBody ? body.size()
                                                                          : send_len));
        body.resize(faulty && rule.kind == FaultKind::kDropMidBody ? body.size() / 2 : send_len);
      } else {
        body.clear();
      }
      if (!WriteAll(fd, resp.Serialize())) break;
      // The body in pieces, counting what the kernel took (body_bytes_sent).
      bool sent = true;
      for (size_t pos = 0; pos < body.size() && sent; pos += 64 << 10) {
        std::string_view piece = std::string_view(body).substr(pos, 64 << 10);
        sent = WriteAll(fd, piece);
        if (sent) body_bytes_sent_ += piece.size();
      }
      if (!sent) break;
      if (faulty && rule.kind == FaultKind::kDropMidBody) break;
    }
  }
done : {
  std::lock_guard<std::mutex> l(mu_);
  client_fds_.erase(fd);
}
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

}  // namespace lazypull::testing
