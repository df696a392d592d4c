// libcurl implementation of HttpTransport.
#include <curl/curl.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "fetcher/registry/http_transport.h"
#include "fmt/format.h"

namespace lazypull::registry {

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

std::vector<std::string> HttpResponse::Headers(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers) {
    if (k == name) out.push_back(v);
  }
  return out;
}

namespace {

constexpr char kSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";

std::once_flag g_curl_init;  // curl_global_init is process-wide by libcurl's design.

struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  CURL* easy = nullptr;
  bool too_large = false;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    // A new status line (e.g. after 100 Continue): forget earlier headers.
    t->response->headers.clear();
    return size * n;
  }
  if (line == "\r\n" || line == "\n") {
    // End of this response's headers (a 1xx or a redirect has its own).
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    if (t->request->head_check && code >= 200 && code < 300) {
      t->response->status = static_cast<int>(code);
      if (!t->request->head_check(*t->response)) {
        t->response->stopped_by_sink = true;
        return 0;  // aborts the transfer before the body; reported as OK in Send
      }
    }
    return size * n;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name = absl::AsciiStrToLower(std::string(line.substr(0, colon)));
  std::string value(line.substr(colon + 1));
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
    value.pop_back();
  }
  size_t start = value.find_first_not_of(" \t");
  value = start == std::string::npos ? "" : value.substr(start);
  t->response->headers.emplace_back(std::move(name), std::move(value));
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  long code = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
  t->response->body_bytes += len;
  if (t->request->body_sink && code >= 200 && code < 300) {
    t->response->status = static_cast<int>(code);
    if (!t->request->body_sink(*t->response, std::string_view(data, len))) {
      t->response->stopped_by_sink = true;
      return 0;  // aborts the transfer; reported as OK below
    }
    return len;
  }
  if (t->response->body.size() + len > t->request->max_body_bytes) {
    t->too_large = true;
    return 0;
  }
  t->response->body.append(data, len);
  return len;
}

// curl's error text may quote the URL: never let its query string through.
std::string RedactErrorText(std::string text, const std::string& url) {
  const std::string redacted = RedactUrl(url);
  for (size_t at = text.find(url); at != std::string::npos; at = text.find(url, at)) {
    text.replace(at, url.size(), redacted);
    at += redacted.size();
  }
  return text;
}

// Called by libcurl about once a second (more often while bytes flow).
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return t->request->cancelled && t->request->cancelled() ? 1 : 0;
}

class CurlTransport : public HttpTransport {
 public:
  CurlTransport() {
    std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    share_ = curl_share_init();
    curl_share_setopt(share_, CURLSHOPT_LOCKFUNC, &CurlTransport::Lock);
    curl_share_setopt(share_, CURLSHOPT_UNLOCKFUNC, &CurlTransport::Unlock);
    curl_share_setopt(share_, CURLSHOPT_USERDATA, this);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  }

  ~CurlTransport() override {
    for (CURL* e : idle_) curl_easy_cleanup(e);
    curl_share_cleanup(share_);
  }

  absl::StatusOr<HttpResponse> Send(const HttpRequest& req) override {
    CURL* easy = Acquire();
    HttpResponse resp;
    Transfer t{&req, &resp, easy};
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_SHARE, share_);
    curl_easy_setopt(easy, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(req.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(req.timeout.count()));
    if (req.low_speed_time.count() > 0) {
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(req.low_speed_bytes));
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME,
                       std::max(1L, static_cast<long>(req.low_speed_time.count() / 1000)));
    }
    if (req.cancelled) {
      curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &OnProgress);
      curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &t);
    }
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 512L * 1024);
    // Registries send blobs as-is; never ask for transfer compression of tarballs.
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, nullptr);

    if (req.method == "HEAD") {
      curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (req.method == "GET") {
      curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req.method.c_str());
      // Never NULL: curl would then read the body from stdin.
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req.body.empty() ? "" : req.body.data());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    }

    curl_slist* headers = nullptr;
    bool has_content_type = false;
    for (const auto& [k, v] : req.headers) {
      headers = curl_slist_append(headers, (k + ": " + v).c_str());
      if (absl::AsciiStrToLower(k) == "content-type") has_content_type = true;
    }
    if (!has_content_type && req.method != "GET" && req.method != "HEAD") {
      headers = curl_slist_append(headers, "Content-Type:");  // drop curl's form default
    }
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);

    // TLS.
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, req.tls.skip_verify ? 0L : 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, req.tls.skip_verify ? 0L : 2L);
    std::shared_ptr<const std::string> ca_blob;
    if (!req.tls.ca_files.empty()) {
      auto blob = CaBundle(req.tls.ca_files);
      if (!blob.ok()) {
        Release(easy);
        curl_slist_free_all(headers);
        return blob.status();
      }
      ca_blob = *blob;
      curl_blob b{const_cast<char*>(ca_blob->data()), ca_blob->size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &b);
    }
    if (!req.tls.client_pairs.empty()) {
      curl_easy_setopt(easy, CURLOPT_SSLCERT, req.tls.client_pairs[0].first.c_str());
      if (!req.tls.client_pairs[0].second.empty()) {
        curl_easy_setopt(easy, CURLOPT_SSLKEY, req.tls.client_pairs[0].second.c_str());
      }
    }

    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(easy);
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    long version = 0;
    curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &version);
    curl_slist_free_all(headers);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(easy, CURLOPT_SHARE, nullptr);
    Release(easy);
    resp.status = static_cast<int>(code);
    resp.http_version = version == CURL_HTTP_VERSION_2_0   ? "2"
                        : version == CURL_HTTP_VERSION_1_0 ? "1.0"
                                                           : "1.1";
    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && resp.stopped_by_sink)) return resp;
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
      return absl::CancelledError(fmt::format("{} {}: cancelled", req.method, RedactUrl(req.url)));
    }
    std::string what =
        fmt::format("{} {}: {}", req.method, RedactUrl(req.url),
                    errbuf[0] ? RedactErrorText(errbuf, req.url) : curl_easy_strerror(rc));
    if (t.too_large) {
      return absl::ResourceExhaustedError(fmt::format("{} {}: response body larger than {} bytes",
                                                      req.method, RedactUrl(req.url),
                                                      req.max_body_bytes));
    }
    switch (rc) {
      case CURLE_OPERATION_TIMEDOUT:
        return absl::DeadlineExceededError(what);
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_CERTPROBLEM:
      case CURLE_SSL_ISSUER_ERROR:
      case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return absl::FailedPreconditionError("TLS: " + what);
      case CURLE_SSL_CONNECT_ERROR:
        return absl::UnavailableError("TLS handshake: " + what);
      default:
        return absl::UnavailableError(what);
    }
  }

 private:
  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<CurlTransport*>(user)->locks_[data % kLocks].lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* user) {
    static_cast<CurlTransport*>(user)->locks_[data % kLocks].unlock();
  }

  CURL* Acquire() {
    std::lock_guard<std::mutex> l(pool_mu_);
    if (idle_.empty()) return curl_easy_init();
    CURL* e = idle_.back();
    idle_.pop_back();
    return e;
  }
  void Release(CURL* e) {
    std::lock_guard<std::mutex> l(pool_mu_);
    if (idle_.size() < 64) {
      idle_.push_back(e);
    } else {
      curl_easy_cleanup(e);
    }
  }

  // System CAs plus the configured ones, concatenated once per distinct set of files.
  absl::StatusOr<std::shared_ptr<const std::string>> CaBundle(
      const std::vector<std::string>& files) {
    std::string key;
    for (const auto& f : files) key += f + "\n";
    std::lock_guard<std::mutex> l(ca_mu_);
    if (auto it = ca_cache_.find(key); it != ca_cache_.end()) return it->second;
    std::string bundle;
    auto append = [&](const std::string& path, bool required) -> absl::Status {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        if (!required) return absl::OkStatus();
        return absl::FailedPreconditionError(fmt::format("TLS: cannot read CA file {}", path));
      }
      std::stringstream ss;
      ss << in.rdbuf();
      bundle += ss.str();
      bundle += "\n";
      return absl::OkStatus();
    };
    if (auto st = append(kSystemCaBundle, false); !st.ok()) return st;
    for (const auto& f : files) {
      if (auto st = append(f, true); !st.ok()) return st;
    }
    auto p = std::make_shared<const std::string>(std::move(bundle));
    ca_cache_[key] = p;
    return p;
  }

  static constexpr int kLocks = 8;
  CURLSH* share_ = nullptr;
  std::mutex locks_[kLocks];
  std::mutex pool_mu_;
  std::vector<CURL*> idle_;
  std::mutex ca_mu_;
  std::map<std::string, std::shared_ptr<const std::string>> ca_cache_;
};

}  // namespace

std::unique_ptr<HttpTransport> NewCurlTransport() { return std::make_unique<CurlTransport>(); }

}  // namespace lazypull::registry
