// FakeTransport: a scripted HttpTransport for registry client unit tests. Answers requests
// from a queue, records them, and streams 2xx bodies to the request's body_sink in pieces of
// `piece_bytes` (honouring a sink that stops the transfer, and a head_check that refuses the
// answer before its body), as libcurl does.
#ifndef LAZYPULL_TESTS_REGISTRY_FAKE_TRANSPORT_H_
#define LAZYPULL_TESTS_REGISTRY_FAKE_TRANSPORT_H_

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fetcher/registry/http_transport.h"

namespace lazypull::registry {

class FakeTransport : public HttpTransport {
 public:
  std::vector<HttpRequest> requests;  // as sent, without their sink
  std::vector<absl::StatusOr<HttpResponse>> answers;
  // Answers for a request whose Range header is the key, taken before the queue: requests sent
  // in parallel arrive in any order.
  std::map<std::string, HttpResponse> answers_by_range;
  size_t piece_bytes = 1 << 20;

  absl::StatusOr<HttpResponse> Send(const HttpRequest& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    requests.push_back(r);
    requests.back().body_sink = nullptr;
    requests.back().head_check = nullptr;
    absl::StatusOr<HttpResponse> a = absl::UnavailableError("no more answers");
    auto by_range = answers_by_range.end();
    for (const auto& [k, v] : r.headers) {
      if (k == "Range") by_range = answers_by_range.find(v);
    }
    if (by_range != answers_by_range.end()) {
      a = std::move(by_range->second);
      answers_by_range.erase(by_range);
    } else if (!answers.empty()) {
      a = answers.front();
      answers.erase(answers.begin());
    } else {
      return a;
    }
    if (a.ok() && r.head_check && a->status >= 200 && a->status < 300 && !r.head_check(*a)) {
      a->body.clear();
      a->body_bytes = 0;
      a->stopped_by_sink = true;
      return a;
    }
    if (a.ok() && r.body_sink && a->status >= 200 && a->status < 300) {
      std::string body = std::move(a->body);
      a->body.clear();
      for (size_t pos = 0; pos < body.size(); pos += piece_bytes) {
        std::string_view piece = std::string_view(body).substr(pos, piece_bytes);
        if (!r.body_sink(*a, piece)) {
          a->stopped_by_sink = true;
          a->body_bytes = pos + piece.size();
          break;
        }
      }
    }
    return a;
  }
  // The value of header `name` of request `i` ("" if absent).
  std::string RequestHeader(size_t i, std::string_view name) const {
    for (const auto& [k, v] : requests.at(i).headers) {
      if (k == name) return v;
    }
    return "";
  }

 private:
  std::mutex mu_;
};

inline HttpResponse Resp(int status, std::string body = "", HttpHeaders headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.body_bytes = r.body.size();
  r.headers = std::move(headers);
  return r;
}

}  // namespace lazypull::registry

#endif  // LAZYPULL_TESTS_REGISTRY_FAKE_TRANSPORT_H_
