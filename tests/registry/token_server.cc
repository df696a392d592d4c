#include "tests/registry/token_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {
namespace {

std::string B64Url(std::string_view in) {
  std::string out;
  absl::WebSafeBase64Escape(absl::string_view(in.data(), in.size()), &out);
  return out;
}

std::string Base32(const unsigned char* data, size_t n) {
  static const char kAlpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  uint64_t buffer = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    buffer = (buffer << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      out += kAlpha[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += kAlpha[(buffer << (5 - bits)) & 31];
  return out;
}

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16));
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenServer>> TokenServer::Start(const std::string& dir,
                                                                const std::string& user,
                                                                const std::string& password) {
  std::unique_ptr<TokenServer> t(new TokenServer());
  t->dir_ = dir;
  t->user_ = user;
  t->password_ = password;
  auto r = RunShell(fmt::format(
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout {0}/token.key -out {0}/token.crt "
      "-days 2 -subj /CN=lazypull-token 2>&1",
      dir));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError("openssl: " + r->output);
  FILE* f = fopen((dir + "/token.key").c_str(), "r");
  if (f == nullptr) return absl::InternalError("cannot read token.key");
  EVP_PKEY* pkey = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  fclose(f);
  if (pkey == nullptr) return absl::InternalError("cannot parse token.key");
  t->pkey_ = pkey;
  // libtrust key ID: base32(sha256(DER SubjectPublicKeyInfo)[:30]) in groups of 4.
  unsigned char* der = nullptr;
  int der_len = i2d_PUBKEY(pkey, &der);
  unsigned char sha[32];
  EVP_Digest(der, der_len, sha, nullptr, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  std::string b32 = Base32(sha, 30);
  for (size_t i = 0; i < b32.size(); i += 4) {
    if (i) t->kid_ += ":";
    t->kid_ += b32.substr(i, 4);
  }
  t->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(t->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(t->listen_fd_, 64) != 0) {
    return absl::InternalError("token server bind failed");
  }
  socklen_t len = sizeof(addr);
  getsockname(t->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  t->port_ = ntohs(addr.sin_port);
  t->thread_ = std::thread([raw = t.get()] { raw->Loop(); });
  return t;
}

TokenServer::~TokenServer() {
  stopping_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_));
}

std::string TokenServer::realm() const { return fmt::format("http://127.0.0.1:{}/token", port_); }

std::vector<std::string> TokenServer::scopes() const {
  std::lock_guard<std::mutex> l(mu_);
  return scopes_;
}

void TokenServer::Loop() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;
    }
    Handle(fd);  // one request per connection; requests are tiny
    ::close(fd);
  }
}

std::string TokenServer::MakeJwt(const std::string& query, bool expired) {
  nlohmann::json access = nlohmann::json::array();
  std::string scope_list;
  for (absl::string_view kv : absl::StrSplit(query, '&')) {
    if (!absl::StartsWith(kv, "scope=")) continue;
    std::string scope = UrlDecode(std::string_view(kv.data() + 6, kv.size() - 6));
    scope_list += (scope_list.empty() ? "" : " ") + scope;
    for (absl::string_view one : absl::StrSplit(scope, ' ', absl::SkipEmpty())) {
      std::vector<std::string> parts = absl::StrSplit(one, ':');
      if (parts.size() < 3) continue;
      nlohmann::json actions = nlohmann::json::array();
      for (absl::string_view a : absl::StrSplit(parts.back(), ','))
        actions.push_back(std::string(a));
      access.push_back({{"type", parts[0]}, {"name", parts[1]}, {"actions", actions}});
    }
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    scopes_.push_back(scope_list);
  }
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  int64_t exp = expired ? now - 600 : now + 600;
  nlohmann::json header = {{"typ", "JWT"}, {"alg", "RS256"}, {"kid", kid_}};
  nlohmann::json claims = {{"iss", kIssuer},
                           {"sub", user_},
                           {"aud", kService},
                           {"exp", exp},
                           {"nbf", now - 700},
                           {"iat", now - 700},
                           {"jti", fmt::format("{}-{}", now, requests_.load())},
                           {"access", access}};
  std::string signing_input = B64Url(header.dump()) + "." + B64Url(claims.dump());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY*>(pkey_));
  size_t sig_len = 0;
  EVP_DigestSign(ctx, nullptr, &sig_len,
                 reinterpret_cast<const unsigned char*>(signing_input.data()),
                 signing_input.size());
  std::string sig(sig_len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                 reinterpret_cast<const unsigned char*>(signing_input.data()),
                 signing_input.size());
  EVP_MD_CTX_free(ctx);
  sig.resize(sig_len);
  return signing_input + "." + B64Url(sig);
}

void TokenServer::Handle(int fd) {
  std::string buf;
  char tmp[8192];
  while (buf.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0) return;
    buf.append(tmp, static_cast<size_t>(n));
  }
  requests_++;
  std::string line = buf.substr(0, buf.find("\r\n"));
  if (line.starts_with("POST ")) {
    // OAuth2 refresh-token grant: the form is the body.
    size_t head_end = buf.find("\r\n\r\n") + 4;
    std::string lower_head = buf.substr(0, head_end);
    for (auto& c : lower_head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    size_t cl = 0;
    if (auto p = lower_head.find("content-length:"); p != std::string::npos) {
      cl = std::strtoul(lower_head.c_str() + p + 15, nullptr, 10);
    }
    while (buf.size() < head_end + cl) {
      ssize_t n = ::recv(fd, tmp, sizeof(tmp), 0);
      if (n <= 0) return;
      buf.append(tmp, static_cast<size_t>(n));
    }
    std::string form = buf.substr(head_end, cl);
    oauth_requests_++;
    std::string want_token;
    {
      std::lock_guard<std::mutex> l(mu_);
      want_token = refresh_token_;
    }
    bool ok = false;
    for (absl::string_view kv : absl::StrSplit(form, '&')) {
      if (absl::StartsWith(kv, "refresh_token=")) {
        ok = !want_token.empty() &&
             UrlDecode(std::string_view(kv.data() + 14, kv.size() - 14)) == want_token;
      }
    }
    std::string resp;
    if (!ok) {
      resp = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    } else {
      nlohmann::json body = {{"access_token", MakeJwt(form, false)}, {"expires_in", 300}};
      std::string b = body.dump();
      resp = fmt::format(
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
          "Connection: close\r\n\r\n{}",
          b.size(), b);
    }
    ::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
    return;
  }
  std::string target = line.substr(line.find(' ') + 1);
  target = target.substr(0, target.find(' '));
  std::string query =
      target.find('?') == std::string::npos ? "" : target.substr(target.find('?') + 1);
  std::string want = "authorization: basic ";
  std::string lower = buf;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool authorized = false;
  if (auto p = lower.find(want); p != std::string::npos) {
    std::string b64 = buf.substr(p + want.size());
    b64 = b64.substr(0, b64.find("\r\n"));
    std::string decoded;
    authorized = absl::Base64Unescape(b64, &decoded) && decoded == user_ + ":" + password_;
  }
  std::string resp;
  if (!authorized) {
    resp = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  } else {
    bool expired = false;
    if (expired_left_.load() > 0) {
      expired_left_--;
      expired = true;
    }
    nlohmann::json body = {{"token", MakeJwt(query, expired)}, {"expires_in", 300}};
    std::string b = body.dump();
    resp = fmt::format(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
        "Connection: close\r\n\r\n{}",
        b.size(), b);
  }
  ::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
}

}  // namespace lazypull::testing
