#include "fetcher/registry/registry_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/registry/byteranges.h"
#include "fetcher/registry/registry_call.h"
#include "fetcher/registry/request_observer.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::registry {

using Clock = std::chrono::steady_clock;
using namespace internal;  // NOLINT: this module's own helpers

// Caps in-flight requests per host (the daemon's many FUSE threads must not open hundreds of
// connections to one registry).
class RegistryClient::HostLimiter {
 public:
  explicit HostLimiter(int max) : max_(max) {}
  // False (without a slot) if `cancelled` turns true while waiting for one.
  bool Acquire(const std::string& host, const std::function<bool()>& cancelled) {
    std::unique_lock<std::mutex> l(mu_);
    while (in_flight_[host] >= max_) {
      if (cancelled && cancelled()) return false;
      cv_.wait_for(l, std::chrono::milliseconds(100));
    }
    ++in_flight_[host];
    return true;
  }
  void Release(const std::string& host) {
    {
      std::lock_guard<std::mutex> l(mu_);
      --in_flight_[host];
    }
    cv_.notify_all();
  }

 private:
  const int max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> in_flight_;
};

namespace internal {

std::string Origin(const std::string& url) {
  auto p = url.find("://");
  if (p == std::string::npos) return url;
  auto slash = url.find('/', p + 3);
  return url.substr(0, slash);
}

std::string HostOfUrl(const std::string& url) {
  std::string o = Origin(url);
  auto p = o.find("://");
  return p == std::string::npos ? o : o.substr(p + 3);
}

std::string HostnameOnly(const std::string& host) {
  if (!host.empty() && host[0] == '[') return host.substr(0, host.find(']') + 1);
  return host.substr(0, host.rfind(':'));
}

std::string ResolveLocation(const std::string& base_url, const std::string& location) {
  if (location.starts_with("http://") || location.starts_with("https://")) return location;
  if (location.starts_with("/")) return Origin(base_url) + location;
  auto q = base_url.find('?');
  std::string b = base_url.substr(0, q);
  return b.substr(0, b.rfind('/') + 1) + location;
}

bool IsRetriableStatus(int s) { return s == 429 || s == 500 || s == 502 || s == 503 || s == 504; }

bool IsRetriableError(const absl::Status& st) {
  return st.code() == absl::StatusCode::kUnavailable ||
         st.code() == absl::StatusCode::kDeadlineExceeded ||
         st.code() == absl::StatusCode::kDataLoss;
}

// Registry error bodies are {"errors":[{"code":..,"message":..}]}; keep a short summary.
std::string ErrorSummary(const HttpResponse& r) {
  try {
    auto j = nlohmann::json::parse(r.body);
    if (j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
      const auto& e = j["errors"][0];
      return fmt::format(" ({}: {})", e.value("code", ""), e.value("message", ""));
    }
  } catch (const nlohmann::json::exception&) {
  }
  return "";
}

std::string ContentTypeOf(const HttpResponse& r) {
  std::string ct = r.Header("content-type");
  ct = ct.substr(0, ct.find(';'));
  return std::string(absl::StripAsciiWhitespace(ct));
}
}  // namespace internal

namespace {

MirrorRoutesOptions RoutesOptions(const RegistryConfig& config) {
  MirrorRoutesOptions options;
  options.start_quiet = config.mirror_start_quiet;
  return options;
}

}  // namespace

RegistryClient::RegistryClient(RegistryConfig config, std::unique_ptr<HttpTransport> transport)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      credentials_(config_.auths, config_.docker_config, config_.credential_provider),
      authorizer_(
          std::make_unique<Authorizer>(transport_.get(), &credentials_, config_.request_timeout)),
      limiter_(std::make_unique<HostLimiter>(config_.max_concurrency_per_host)),
      routes_(std::make_unique<MirrorRoutes>(RoutesOptions(config_))) {}

RegistryClient::~RegistryClient() = default;

RegistryStats RegistryClient::stats() const {
  return {.requests = requests_.load(),
          .retries = retries_.load(),
          .bytes_received = bytes_received_.load(),
          .mirror_fallbacks = mirror_fallbacks_.load(),
          .mirror_range_refusals = mirror_range_refusals_.load(),
          .mirror_skips = mirror_skips_.load(),
          .mirror_bad_bytes = mirror_bad_bytes_.load()};
}

absl::StatusOr<std::vector<RegistryHost>> RegistryClient::HostsFor(const Reference& ref,
                                                                   uint32_t capability) {
  std::vector<RegistryHost> all;
  {
    std::lock_guard<std::mutex> l(hosts_mu_);
    auto it = hosts_cache_.find(ref.host);
    if (it != hosts_cache_.end() && Clock::now() - it->second.first < std::chrono::seconds(5)) {
      all = it->second.second;
    }
  }
  if (all.empty()) {
    auto hosts = ResolveRegistryHosts(config_, ref.host);
    if (!hosts.ok()) return hosts.status();
    all = std::move(*hosts);
    std::lock_guard<std::mutex> l(hosts_mu_);
    hosts_cache_[ref.host] = {Clock::now(), all};
  }
  std::vector<RegistryHost> out;
  for (auto& h : all) {
    if (h.capabilities & capability) out.push_back(std::move(h));
  }
  if (out.empty()) {
    return absl::FailedPreconditionError(
        fmt::format("no host configured for registry {} has the needed capability", ref.host));
  }
  return out;
}

absl::StatusOr<HttpResponse> RegistryClient::Execute(const Reference& ref, Call& call) {
  auto hosts = HostsFor(ref, call.capability);
  if (!hosts.ok()) return hosts.status();
  std::string mirror_errors;
  const std::string scope = MirrorScope(ref);
  for (size_t i = 0; i < hosts->size(); ++i) {
    const RegistryHost& host = (*hosts)[i];
    const bool last = i + 1 == hosts->size();
    bool first_request = false;
    if (!last && host.mirror && !call.blob.empty() &&
        (!routes_->Trusted(host.host, call.blob) ||
         (call.range_span &&
          !routes_->RangesAllowed(host.host, call.blob, Clock::now(), scope, &first_request)))) {
      mirror_skips_++;
      continue;
    }
    // Ended after the answer's mark is set: a read of another blob meanwhile then sees the
    // scope cold (refused) or asks the mirror (served).
    auto end_first_request = [&] {
      if (first_request) routes_->EndFirstRequest(host.host, scope);
    };
    call.range_refused = false;
    auto resp = ExecuteOnHost(ref, host, call, last);
    if (resp.ok()) {
      if (call.range_span && host.mirror) routes_->MarkRangesServed(host.host, call.blob);
      end_first_request();
      return resp;
    }
    if (last) {
      if (mirror_errors.empty()) return resp.status();
      return absl::Status(resp.status().code(), std::string(resp.status().message()) +
                                                    "; mirrors failed first: " + mirror_errors);
    }
    if (call.range_refused) {
      // A pull-through cache that has not stored the blob yet: it is filling itself from this
      // very request (mirror_routes.h), so it is asked again later; meanwhile the next host.
      mirror_range_refusals_++;
      const std::chrono::milliseconds retry =
          routes_->MarkNoRanges(host.host, call.blob, Clock::now(), scope);
      end_first_request();
      LogInfo(
          "registry mirror does not serve ranges of this blob yet; reading them from the next "
          "host",
          {{"mirror", host.ApiRoot()},
           {"repository", ref.repository},
           {"digest", call.blob},
           {"answer", std::string(resp.status().message())},
           {"retry_in_ms", retry.count()}});
      continue;
    }
    end_first_request();
    mirror_fallbacks_++;
    LogWarn("registry mirror failed, trying next host",
            {{"mirror", host.ApiRoot()},
             {"repository", ref.repository},
             {"what", call.what},
             {"error", std::string(resp.status().message())}});
    if (!mirror_errors.empty()) mirror_errors += "; ";
    mirror_errors += std::string(resp.status().message());
  }
  // Every host was skipped (cannot happen: the last one never is).
  return absl::InternalError(fmt::format("{}: no host left to ask", call.what));
}

std::optional<std::chrono::steady_clock::time_point> RegistryClient::MirrorReadyAt(
    const Reference& ref, const oci::Descriptor& desc, const std::function<bool()>& cancelled) {
  auto hosts = HostsFor(ref, kCapPull);
  if (!hosts.ok()) return std::nullopt;
  const std::string blob = desc.digest.ToString();
  const std::string scope = MirrorScope(ref);
  const Clock::time_point now = Clock::now();
  // The first mirror Execute would not skip for good decides (the last host is never a
  // mirror to wait for).
  for (size_t i = 0; i + 1 < hosts->size(); ++i) {
    const RegistryHost& host = (*hosts)[i];
    if (!host.mirror || !routes_->Trusted(host.host, blob)) continue;
    if (std::optional<Clock::time_point> until =
            routes_->FillingUntil(host.host, blob, now, scope)) {
      return until;
    }
    // The retry time has come, or the mirror was never asked for this blob while it fills
    // others of the repository: the bulk reader probes (not a program's read, mirror_routes.h).
    if (!routes_->TakeBulkProbe(host.host, blob, now, scope)) return std::nullopt;
    absl::StatusOr<bool> served = ProbeMirrorRanges(ref, desc, host, cancelled);
    if (served.ok() && *served) {
      routes_->MarkRangesServed(host.host, blob);
      LogInfo("registry mirror serves ranges of this blob now",
              {{"mirror", host.ApiRoot()}, {"repository", ref.repository}, {"digest", blob}});
      return std::nullopt;
    }
    if (!served.ok()) return std::nullopt;  // failed: reads skip it as any failed mirror
    mirror_range_refusals_++;
    const std::chrono::milliseconds retry =
        routes_->MarkNoRanges(host.host, blob, Clock::now(), scope);
    LogInfo("registry mirror does not serve ranges of this blob yet; the background fetch waits",
            {{"mirror", host.ApiRoot()},
             {"repository", ref.repository},
             {"digest", blob},
             {"retry_in_ms", retry.count()}});
    return routes_->FillingUntil(host.host, blob, Clock::now(), scope);
  }
  return std::nullopt;
}

bool RegistryClient::ReportBadBytes(const Reference& ref, const oci::Descriptor& desc,
                                    ByteRange range) {
  const std::string blob = desc.digest.ToString();
  std::vector<std::string> mirrors = routes_->ReportBadBytes(blob, range);
  for (const std::string& mirror : mirrors) {
    mirror_bad_bytes_++;
    LogError("registry mirror served bytes that failed verification; not used for this blob again",
             {{"mirror", mirror},
              {"registry", ref.host},
              {"repository", ref.repository},
              {"digest", blob},
              {"offset", range.offset},
              {"length", range.length}});
  }
  return !mirrors.empty();
}

absl::StatusOr<HttpResponse> RegistryClient::ExecuteOnHost(const Reference& ref,
                                                           const RegistryHost& host, Call& call,
                                                           bool last_host) {
  const auto deadline = Clock::now() + config_.total_timeout;
  std::string scope = fmt::format("repository:{}:{}", ref.repository, call.actions);
  if (!call.extra_scope.empty()) scope += " " + call.extra_scope;
  std::string context =
      fmt::format("{} in {}/{} via {}", call.what, ref.host, ref.repository, host.ApiRoot());
  std::vector<std::string> retried;
  int attempts = 0;
  int auth_rounds = 0;
  thread_local std::minstd_rand rng(std::random_device{}());

  // A mirror's answer to a range read: abandoned at its headers unless it is the asked range
  // (Call::range_span); the bytes it does deliver are recorded for ReportBadBytes.
  const bool mirror_range = call.range_span.has_value() && host.mirror;
  std::string refusal;
  std::function<bool(const HttpResponse&)> head_check;
  std::function<bool(const HttpResponse&, std::string_view)> sink = call.sink;
  if (mirror_range && call.sink) {
    sink = [&](const HttpResponse& head, std::string_view data) {
      routes_->RecordServed(host.host, call.blob, *call.range_span);
      return call.sink(head, data);
    };
  }

  auto cancelled = [&] { return call.cancelled && call.cancelled(); };
  auto cancelled_error = [&] {
    return absl::CancelledError(fmt::format("{}: cancelled", context));
  };
  while (true) {
    if (cancelled()) return cancelled_error();
    HttpHeaders headers = call.headers;
    if (call.on_attempt) call.on_attempt(&headers);
    if (mirror_range && !last_host) {
      std::string asked;
      for (const auto& [k, v] : headers) {
        if (k == "Range") asked = v;
      }
      refusal.clear();
      head_check = [&refusal, asked](const HttpResponse& head) {
        if (head.status == 206) {
          if (ByterangesBoundary(head.Header("content-type"))) return true;
          // "bytes=A-..." asks from A: a single part must start there.
          uint64_t first = 0;
          std::optional<ContentRange> cr = ParseContentRange(head.Header("content-range"));
          std::string_view a(asked);
          if (a.starts_with("bytes=")) a.remove_prefix(6);
          if (cr && absl::SimpleAtoi(std::string(a.substr(0, a.find('-'))), &first) &&
              cr->offset == first) {
            return true;
          }
          refusal = fmt::format("answered 206 with Content-Range \"{}\" to Range \"{}\"",
                                head.Header("content-range").substr(0, 100), asked.substr(0, 100));
        } else {
          refusal = fmt::format("answered HTTP {} (the whole blob) to Range \"{}\"", head.status,
                                asked.substr(0, 100));
        }
        return false;
      };
    }
    auto auth = authorizer_->HeaderFor(ref, host.host, scope, host.tls);
    if (!auth.ok()) {
      return absl::Status(auth.status().code(), fmt::format("{}: auth: {}", context,
                                                            std::string(auth.status().message())));
    }
    std::string url = call.absolute_url.empty()
                          ? fmt::format("{}/{}/{}", host.ApiRoot(), ref.repository, call.path)
                          : call.absolute_url;
    // Like containerd, tell a mirror which registry the repository belongs to.
    if (call.absolute_url.empty() && host.mirror && host.host != ref.host) {
      url += (url.find('?') == std::string::npos ? "?ns=" : "&ns=") + ref.host;
    }
    std::string method = call.method;
    std::string_view body = call.body;
    bool send_auth = true;
    absl::StatusOr<HttpResponse> resp;
    for (int redirects = 0;; ++redirects) {
      HttpRequest req;
      req.method = method;
      req.url = url;
      req.headers = headers;
      // hosts.toml headers are for the registry like credentials: not for another origin.
      if (send_auth) {
        for (const auto& h : host.headers) req.headers.push_back(h);
      }
      req.headers.emplace_back("User-Agent", config_.user_agent);
      if (send_auth && !auth->empty()) req.headers.emplace_back("Authorization", *auth);
      req.body = body;
      std::string target_host = HostOfUrl(url);
      if (HostnameOnly(target_host) == HostnameOnly(host.host)) req.tls = host.tls;
      req.connect_timeout = config_.connect_timeout;
      req.timeout = call.timeout.count() < 0 ? config_.request_timeout : call.timeout;
      auto remaining =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (remaining.count() <= 0) remaining = std::chrono::milliseconds(1);
      if (req.timeout.count() == 0 || req.timeout > remaining) req.timeout = remaining;
      req.max_body_bytes = call.max_body;
      req.body_sink = sink;
      req.head_check = head_check;
      req.cancelled = call.cancelled;
      req.low_speed_time = config_.low_speed_time;
      req.low_speed_bytes = config_.low_speed_bytes;
      if (!limiter_->Acquire(target_host, call.cancelled)) return cancelled_error();
      requests_++;
      const auto sent = Clock::now();
      resp = transport_->Send(req);
      limiter_->Release(target_host);
      if (resp.ok()) bytes_received_ += resp->body_bytes;
      if (config_.observer != nullptr) {
        config_.observer->OnResponse({.method = req.method,
                                      .host = target_host,
                                      .status = resp.ok() ? resp->status : 0,
                                      .body_bytes = resp.ok() ? resp->body_bytes : 0,
                                      .duration = Clock::now() - sent});
      }
      if (!resp.ok() || redirects >= 5) break;
      if (!refusal.empty() && resp->stopped_by_sink) {
        call.range_refused = true;
        return absl::FailedPreconditionError(
            fmt::format("{}: mirror does not serve this range: {}", context, refusal));
      }
      int s = resp->status;
      if (s != 301 && s != 302 && s != 303 && s != 307 && s != 308) break;
      std::string location = resp->Header("location");
      if (location.empty()) break;
      std::string next = ResolveLocation(url, location);
      // Credentials are for the registry only: never forward them to another origin (blob
      // storage, CDN), as docker and containerd do.
      if (Origin(next) != Origin(url)) send_auth = false;
      if (s == 303) {
        method = "GET";
        body = {};
      }
      url = next;
    }

    std::string reason;
    absl::Status failure;
    std::chrono::milliseconds retry_after{-1};
    if (!resp.ok()) {
      failure = absl::Status(resp.status().code(),
                             fmt::format("{}: {}", context, std::string(resp.status().message())));
      reason = absl::StatusCodeToString(resp.status().code());
      if (!IsRetriableError(resp.status())) return failure;
    } else {
      int s = resp->status;
      if (s == 401 && auth_rounds < 2) {
        ++auth_rounds;
        auto st = authorizer_->OnUnauthorized(ref, host.host, scope, *resp, host.tls);
        if (!st.ok()) {
          return absl::Status(st.code(),
                              fmt::format("{}: HTTP 401: {}", context, std::string(st.message())));
        }
        continue;
      }
      if (std::find(call.accept.begin(), call.accept.end(), s) != call.accept.end()) {
        absl::Status st = call.validate ? call.validate(*resp) : absl::OkStatus();
        if (st.ok()) {
          if (!retried.empty()) {
            LogInfo("registry request succeeded after retries",
                    {{"what", context}, {"attempts", attempts + 1}});
          }
          return resp;
        }
        failure = absl::Status(
            st.code(), fmt::format("{}: HTTP {}: {}", context, s, std::string(st.message())));
        if (!IsRetriableError(st) ||
            (st.code() == absl::StatusCode::kDataLoss && !call.retry_data_loss)) {
          return failure;
        }
        reason = std::string(st.message()).substr(0, 80);
      } else if (IsRetriableStatus(s)) {
        failure =
            absl::UnavailableError(fmt::format("{}: HTTP {}{}", context, s, ErrorSummary(*resp)));
        reason = fmt::format("HTTP {}", s);
        int64_t secs = 0;
        if (absl::SimpleAtoi(resp->Header("retry-after"), &secs) && secs >= 0) {
          retry_after = std::chrono::seconds(secs);
        }
      } else if (s == 404) {
        return absl::NotFoundError(
            fmt::format("{}: HTTP 404 not found{}", context, ErrorSummary(*resp)));
      } else if (s == 401) {
        return absl::UnauthenticatedError(fmt::format(
            "{}: HTTP 401 unauthorized after authenticating{}", context, ErrorSummary(*resp)));
      } else if (s == 403) {
        return absl::PermissionDeniedError(
            fmt::format("{}: HTTP 403 forbidden{}", context, ErrorSummary(*resp)));
      } else if (s == 416) {
        return absl::OutOfRangeError(fmt::format("{}: HTTP 416 range not satisfiable", context));
      } else {
        return absl::FailedPreconditionError(
            fmt::format("{}: unexpected HTTP {}{}", context, s, ErrorSummary(*resp)));
      }
    }

    // Retry with jittered exponential backoff (or the server's Retry-After).
    retried.push_back(reason);
    if (attempts >= config_.max_retries) {
      return absl::Status(failure.code(), fmt::format("{} (gave up after {} attempts; retried: {})",
                                                      std::string(failure.message()), attempts + 1,
                                                      fmt::join(retried, ", ")));
    }
    auto base = config_.initial_backoff * (1 << std::min(attempts, 16));
    if (base > config_.max_backoff) base = config_.max_backoff;
    std::uniform_int_distribution<int64_t> jitter(base.count() / 2,
                                                  std::max<int64_t>(base.count(), 1));
    std::chrono::milliseconds wait(jitter(rng));
    if (retry_after.count() >= 0) wait = retry_after;
    if (Clock::now() + wait >= deadline) {
      return absl::Status(
          failure.code(),
          fmt::format("{} (total time limit {} ms reached after {} attempts; retried: {})",
                      std::string(failure.message()), config_.total_timeout.count(), attempts + 1,
                      fmt::join(retried, ", ")));
    }
    LogWarn("registry request retried", {{"what", context},
                                         {"reason", reason},
                                         {"attempt", attempts + 1},
                                         {"backoff_ms", wait.count()}});
    retries_++;
    ++attempts;
    // Backoff in slices, so a cancelled operation does not wait it out.
    for (auto until = Clock::now() + wait; Clock::now() < until;) {
      if (cancelled()) return cancelled_error();
      std::this_thread::sleep_for(
          std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(100)));
    }
  }
}

}  // namespace lazypull::registry
