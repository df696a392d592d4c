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
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::registry {

using Clock = std::chrono::steady_clock;

// One logical request, replayed by ExecuteOnHost for retries, redirects and auth.
struct RegistryClient::Call {
  std::string method = "GET";
  std::string path;          // below "<api root>/<repository>/", e.g. "manifests/latest"
  std::string absolute_url;  // used instead of `path` when set (upload locations)
  HttpHeaders headers;
  std::string_view body;
  uint32_t capability = kCapPull;
  std::string actions = "pull";           // token scope actions for the repository
  std::string extra_scope;                // e.g. "repository:other:pull" for cross-repo mounts
  std::vector<int> accept = {200};        // statuses handed to `validate`
  std::string what;                       // "GET manifest latest", for errors and logs
  std::chrono::milliseconds timeout{-1};  // -1: config.request_timeout; 0: none
  uint64_t max_body = 64ull << 20;
  std::function<bool(int, std::string_view)> sink;
  std::function<void(HttpHeaders*)> on_attempt;  // resets per-attempt state, may add headers
  // Checks an accepted response. DataLoss / Unavailable are retried; other errors returned.
  std::function<absl::Status(const HttpResponse&)> validate;
};

// Caps in-flight requests per host (the daemon's many FUSE threads must not open hundreds of
// connections to one registry).
class RegistryClient::HostLimiter {
 public:
  explicit HostLimiter(int max) : max_(max) {}
  void Acquire(const std::string& host) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return in_flight_[host] < max_; });
    ++in_flight_[host];
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

namespace {

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

}  // namespace

RegistryClient::RegistryClient(RegistryConfig config, std::unique_ptr<HttpTransport> transport)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      credentials_(config_.auths, config_.docker_config, config_.credential_provider),
      authorizer_(
          std::make_unique<Authorizer>(transport_.get(), &credentials_, config_.request_timeout)),
      limiter_(std::make_unique<HostLimiter>(config_.max_concurrency_per_host)) {}

RegistryClient::~RegistryClient() = default;

RegistryStats RegistryClient::stats() const {
  return {requests_.load(), retries_.load(), bytes_received_.load(), mirror_fallbacks_.load()};
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
  for (size_t i = 0; i < hosts->size(); ++i) {
    const RegistryHost& host = (*hosts)[i];
    auto resp = ExecuteOnHost(ref, host, call);
    if (resp.ok()) return resp;
    if (i + 1 == hosts->size()) {
      if (mirror_errors.empty()) return resp.status();
      return absl::Status(resp.status().code(), std::string(resp.status().message()) +
                                                    "; mirrors failed first: " + mirror_errors);
    }
    mirror_fallbacks_++;
    LogWarn("registry mirror failed, trying next host",
            {{"mirror", host.ApiRoot()},
             {"repository", ref.repository},
             {"what", call.what},
             {"error", std::string(resp.status().message())}});
    if (!mirror_errors.empty()) mirror_errors += "; ";
    mirror_errors += std::string(resp.status().message());
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<HttpResponse> RegistryClient::ExecuteOnHost(const Reference& ref,
                                                           const RegistryHost& host, Call& call) {
  const auto deadline = Clock::now() + config_.total_timeout;
  std::string scope = fmt::format("repository:{}:{}", ref.repository, call.actions);
  if (!call.extra_scope.empty()) scope += " " + call.extra_scope;
  std::string context =
      fmt::format("{} in {}/{} via {}", call.what, ref.host, ref.repository, host.ApiRoot());
  std::vector<std::string> retried;
  int attempts = 0;
  int auth_rounds = 0;
  thread_local std::minstd_rand rng(std::random_device{}());

  while (true) {
    HttpHeaders headers = call.headers;
    if (call.on_attempt) call.on_attempt(&headers);
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
      for (const auto& h : host.headers) req.headers.push_back(h);
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
      req.body_sink = call.sink;
      limiter_->Acquire(target_host);
      requests_++;
      resp = transport_->Send(req);
      limiter_->Release(target_host);
      if (resp.ok()) bytes_received_ += resp->body_bytes;
      if (!resp.ok() || redirects >= 5) break;
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
        if (!IsRetriableError(st)) return failure;
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
    std::this_thread::sleep_for(wait);
  }
}

// --- Pull side ---------------------------------------------------------------------------

absl::StatusOr<FetchedManifest> RegistryClient::FetchManifest(const Reference& ref) {
  Call call;
  call.path = "manifests/" + ref.ManifestReference();
  call.what = "GET manifest " + ref.ManifestReference();
  call.capability = ref.digest.empty() ? kCapResolve : kCapPull;
  call.headers.emplace_back("Accept", std::string(oci::kManifestAcceptHeader));
  call.max_body = 4 << 20;
  call.validate = [&](const HttpResponse& r) -> absl::Status {
    if (!ref.digest.empty()) return ref.digest.Verify(r.body);
    std::string header = r.Header("docker-content-digest");
    if (!header.empty()) {
      auto d = Digest::Parse(header);
      if (d.ok()) return d->Verify(r.body);
    }
    return absl::OkStatus();
  };
  auto resp = Execute(ref, call);
  if (!resp.ok()) return resp.status();
  FetchedManifest m;
  m.bytes = std::move(resp->body);
  std::string ct = ContentTypeOf(*resp);
  if (!oci::IsManifestType(ct) && !oci::IsIndexType(ct)) {
    auto sniffed = oci::SniffMediaType(m.bytes);
    if (!sniffed.ok()) return sniffed.status();
    ct = *sniffed;
  }
  if (!oci::IsManifestType(ct) && !oci::IsIndexType(ct)) {
    return absl::InvalidArgumentError(
        fmt::format("manifest {} of {}: unsupported media type \"{}\"", ref.ManifestReference(),
                    ref.Name(), ct));
  }
  m.descriptor.media_type = ct;
  m.descriptor.digest = ref.digest.empty() ? Digest::Of(m.bytes) : ref.digest;
  m.descriptor.size = static_cast<int64_t>(m.bytes.size());
  return m;
}

absl::StatusOr<ResolvedImage> RegistryClient::Resolve(const Reference& ref,
                                                      std::optional<oci::Platform> platform) {
  auto top = FetchManifest(ref);
  if (!top.ok()) return top.status();
  ResolvedImage out;
  out.reference = ref;
  if (oci::IsIndexType(top->descriptor.media_type)) {
    auto index = oci::ParseIndex(top->bytes, top->descriptor.media_type);
    if (!index.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("index of {}: {}", ref.ToString(), std::string(index.status().message())));
    }
    auto chosen = oci::SelectPlatformManifest(*index, platform.value_or(oci::HostPlatform()));
    if (!chosen.ok()) {
      return absl::NotFoundError(
          fmt::format("{}: {}", ref.ToString(), std::string(chosen.status().message())));
    }
    out.index_descriptor = top->descriptor;
    Reference by_digest = ref;
    by_digest.digest = chosen->digest;
    auto m = FetchManifest(by_digest);
    if (!m.ok()) return m.status();
    if (m->descriptor.size != chosen->size) {
      return absl::DataLossError(fmt::format("manifest {} of {}: size {} but index says {}",
                                             chosen->digest.ToString(), ref.Name(),
                                             m->descriptor.size, chosen->size));
    }
    top = std::move(m);
  }
  auto manifest = oci::ParseManifest(top->bytes, top->descriptor.media_type);
  if (!manifest.ok()) {
    return absl::InvalidArgumentError(fmt::format("manifest {} of {}: {}",
                                                  top->descriptor.digest.ToString(), ref.ToString(),
                                                  std::string(manifest.status().message())));
  }
  out.manifest_descriptor = top->descriptor;
  out.manifest_bytes = std::move(top->bytes);
  out.manifest = std::move(*manifest);
  return out;
}

absl::Status RegistryClient::FetchBlobStream(
    const Reference& ref, const oci::Descriptor& desc,
    const std::function<absl::Status(uint64_t, std::string_view)>& sink) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  uint64_t received = 0;       // verified-in-order prefix handed to the sink
  uint64_t attempt_start = 0;  // offset the current attempt asked for
  uint64_t body_pos = 0;       // position in the blob of the next body byte this attempt
  auto hash = std::make_unique<Sha256>();
  absl::Status sink_error;
  bool overlong = false;

  Call call;
  call.path = "blobs/" + desc.digest.ToString();
  call.what = "GET blob " + desc.digest.ToString();
  call.accept = {200, 206};
  call.timeout = std::chrono::milliseconds(0);  // big blobs: bounded by total_timeout
  call.on_attempt = [&](HttpHeaders* h) {
    attempt_start = received;
    sink_error = absl::OkStatus();
    overlong = false;
    if (received > 0) h->emplace_back("Range", fmt::format("bytes={}-", received));
  };
  call.sink = [&](int status, std::string_view data) -> bool {
    if (status == 206 && body_pos < attempt_start) body_pos = attempt_start;
    uint64_t begin = body_pos, end = body_pos + data.size();
    body_pos = end;
    if (end > size) {
      overlong = true;
      return false;
    }
    if (end <= received) return true;  // already have these bytes (200 after a resume)
    std::string_view fresh = data.substr(received > begin ? received - begin : 0);
    hash->Update(fresh);
    sink_error = sink(received, fresh);
    if (!sink_error.ok()) return false;
    received += fresh.size();
    return true;
  };
  call.validate = [&](const HttpResponse& r) -> absl::Status {
    body_pos = 0;
    if (!sink_error.ok()) return sink_error;
    if (r.status == 206) {
      std::string cr = r.Header("content-range");
      if (!cr.starts_with(fmt::format("bytes {}-", attempt_start))) {
        return absl::DataLossError(
            fmt::format("Content-Range \"{}\" does not start at {}", cr, attempt_start));
      }
    }
    if (overlong) {
      received = 0;  // the server disagrees about the blob: start over
      hash = std::make_unique<Sha256>();
      return absl::DataLossError(fmt::format("body longer than size {}", size));
    }
    if (received < size) {
      return absl::UnavailableError(fmt::format("short body: {} of {} bytes", received, size));
    }
    Digest got = hash->Finish();
    hash = std::make_unique<Sha256>();
    if (got != desc.digest) {
      received = 0;  // start over: every byte so far is suspect
      return absl::DataLossError(fmt::format("digest mismatch: got {}", got.ToString()));
    }
    return absl::OkStatus();
  };
  // A dropped connection keeps `received`: the retry resumes with Range. body_pos resets.
  auto wrapped_on_attempt = call.on_attempt;
  call.on_attempt = [&, wrapped_on_attempt](HttpHeaders* h) {
    body_pos = 0;
    wrapped_on_attempt(h);
  };
  if (size == 0) {
    return desc.digest.Verify("");
  }
  auto resp = Execute(ref, call);
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<std::string> RegistryClient::FetchBlob(const Reference& ref,
                                                      const oci::Descriptor& desc,
                                                      uint64_t max_bytes) {
  if (desc.size < 0 || static_cast<uint64_t>(desc.size) > max_bytes) {
    return absl::ResourceExhaustedError(
        fmt::format("blob {} of {} has size {}, above the in-memory limit {}",
                    desc.digest.ToString(), ref.Name(), desc.size, max_bytes));
  }
  std::string out(static_cast<size_t>(desc.size), '\0');
  auto st = FetchBlobStream(ref, desc, [&](uint64_t off, std::string_view d) {
    std::memcpy(out.data() + off, d.data(), d.size());
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

absl::Status RegistryClient::FetchBlobToFile(const Reference& ref, const oci::Descriptor& desc,
                                             const std::string& path) {
  std::string tmp = fmt::format("{}.tmp-{}-{}", path, getpid(),
                                std::hash<std::thread::id>()(std::this_thread::get_id()));
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    return absl::InternalError(fmt::format("open {}: {}", tmp, std::strerror(errno)));
  }
  auto st = FetchBlobStream(ref, desc, [&](uint64_t off, std::string_view d) -> absl::Status {
    size_t done = 0;
    while (done < d.size()) {
      ssize_t n = ::pwrite(fd.get(), d.data() + done, d.size() - done, off + done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(fmt::format("write {}: {}", tmp, std::strerror(errno)));
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  });
  if (st.ok() && ::fsync(fd.get()) != 0) {
    st = absl::InternalError(fmt::format("fsync {}: {}", tmp, std::strerror(errno)));
  }
  fd.Reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    st = absl::InternalError(fmt::format("rename {} → {}: {}", tmp, path, std::strerror(errno)));
  }
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

absl::StatusOr<oci::ImageConfig> RegistryClient::FetchConfig(const Reference& ref,
                                                             const oci::Manifest& manifest) {
  auto bytes = FetchBlob(ref, manifest.config, 16 << 20);
  if (!bytes.ok()) return bytes.status();
  auto cfg = oci::ImageConfig::Parse(*bytes);
  if (!cfg.ok()) {
    return absl::InvalidArgumentError(fmt::format("config {} of {}: {}",
                                                  manifest.config.digest.ToString(), ref.Name(),
                                                  std::string(cfg.status().message())));
  }
  return cfg;
}

absl::StatusOr<std::string> RegistryClient::ReadRange(const Reference& ref,
                                                      const oci::Descriptor& desc, uint64_t offset,
                                                      uint64_t length,
                                                      const std::optional<Digest>& expected) {
  const uint64_t size = static_cast<uint64_t>(desc.size);
  if (offset > size || length > size - offset) {
    return absl::OutOfRangeError(fmt::format("range [{}, +{}) is past the end {} of blob {} in {}",
                                             offset, length, size, desc.digest.ToString(),
                                             ref.Name()));
  }
  if (length == 0) return std::string();
  const uint64_t end = offset + length;
  std::string out;
  uint64_t pos = 0;
  bool overlong = false;
  Call call;
  call.path = "blobs/" + desc.digest.ToString();
  call.what = fmt::format("GET blob {} range [{}, +{})", desc.digest.ToString(), offset, length);
  call.accept = {200, 206};
  call.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset, end - 1));
  call.on_attempt = [&](HttpHeaders*) {
    out.clear();
    out.reserve(length);
    pos = 0;
    overlong = false;
  };
  call.sink = [&](int status, std::string_view data) -> bool {
    if (status == 206) {
      if (out.size() + data.size() > length) {
        overlong = true;
        return false;
      }
      out.append(data);
      return true;
    }
    // 200: the server ignored Range and sends the whole blob; keep only our window.
    uint64_t b = pos, e = pos + data.size();
    pos = e;
    if (e > offset && b < end) {
      uint64_t from = std::max(b, offset), to = std::min(e, end);
      out.append(data.substr(from - b, to - from));
    }
    return pos < end;
  };
  call.validate = [&](const HttpResponse& r) -> absl::Status {
    if (overlong) return absl::DataLossError("206 body longer than the requested range");
    if (r.status == 206) {
      std::string cr = r.Header("content-range");
      std::string want = fmt::format("bytes {}-{}/", offset, end - 1);
      if (!cr.starts_with(want) ||
          (cr.substr(want.size()) != "*" && cr.substr(want.size()) != std::to_string(size))) {
        return absl::DataLossError(
            fmt::format("Content-Range \"{}\" does not match the requested {}{}", cr, want, size));
      }
    }
    if (out.size() != length) {
      return absl::DataLossError(fmt::format("short body: {} of {} bytes", out.size(), length));
    }
    if (expected) return expected->Verify(out);
    return absl::OkStatus();
  };
  auto resp = Execute(ref, call);
  if (!resp.ok()) return resp.status();
  return out;
}

class RegistryClient::RegistryBlobReader : public BlobReader {
 public:
  RegistryBlobReader(RegistryClient* client, Reference ref, oci::Descriptor desc)
      : client_(client), ref_(std::move(ref)), desc_(std::move(desc)) {}

  uint64_t Size() const override { return static_cast<uint64_t>(desc_.size); }

  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    return client_->ReadRange(ref_, desc_, offset, length);
  }

  absl::StatusOr<std::vector<std::string>> ReadRanges(
      const std::vector<ByteRange>& ranges) override {
    std::vector<size_t> order(ranges.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return ranges[a].offset < ranges[b].offset; });
    std::vector<std::string> out(ranges.size());
    const uint64_t gap = client_->config_.merge_gap_bytes;
    // Merge ranges that touch (or are within `gap`) into groups: one request per group.
    struct Group {
      uint64_t start, end;
      size_t first, last;  // [first, last) in `order`
    };
    std::vector<Group> groups;
    for (size_t i = 0; i < order.size();) {
      Group g{ranges[order[i]].offset, ranges[order[i]].end(), i, i + 1};
      while (g.last < order.size() && ranges[order[g.last]].offset <= g.end + gap) {
        g.end = std::max(g.end, ranges[order[g.last]].end());
        ++g.last;
      }
      groups.push_back(g);
      i = g.last;
    }
    // Groups are fetched in parallel (the per-host cap still bounds connections).
    std::atomic<size_t> next{0};
    std::mutex mu;
    absl::Status first_error;
    auto worker = [&] {
      for (size_t gi = next++; gi < groups.size(); gi = next++) {
        const Group& g = groups[gi];
        auto data = client_->ReadRange(ref_, desc_, g.start, g.end - g.start);
        if (!data.ok()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.ok()) first_error = data.status();
          return;
        }
        for (size_t k = g.first; k < g.last; ++k) {
          const ByteRange& r = ranges[order[k]];
          out[order[k]] = data->substr(r.offset - g.start, r.length);
        }
      }
    };
    size_t workers = std::min<size_t>(
        groups.size(), static_cast<size_t>(std::max(1, client_->config_.max_concurrency_per_host)));
    workers = std::min<size_t>(workers, 8);
    std::vector<std::thread> threads;
    for (size_t t = 1; t < workers; ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    if (!first_error.ok()) return first_error;
    return out;
  }

 private:
  RegistryClient* const client_;
  const Reference ref_;
  const oci::Descriptor desc_;
};

std::unique_ptr<BlobReader> RegistryClient::OpenBlob(const Reference& ref,
                                                     const oci::Descriptor& desc) {
  return std::make_unique<RegistryBlobReader>(this, ref, desc);
}

// --- Push side ---------------------------------------------------------------------------

absl::StatusOr<bool> RegistryClient::BlobExists(const Reference& ref, const Digest& digest) {
  auto hosts = HostsFor(ref, kCapPush);
  if (!hosts.ok()) return hosts.status();
  Call call;
  call.method = "HEAD";
  call.path = "blobs/" + digest.ToString();
  call.what = "HEAD blob " + digest.ToString();
  call.actions = "pull,push";
  call.accept = {200, 404};
  auto resp = ExecuteOnHost(ref, hosts->front(), call);
  if (!resp.ok()) return resp.status();
  return resp->status == 200;
}

absl::Status RegistryClient::PushBlob(const Reference& ref, const oci::Descriptor& desc,
                                      std::string_view content) {
  auto reader = NewStringBlobReader(std::string(content));
  return PushBlob(ref, desc, *reader);
}

absl::Status RegistryClient::PushBlob(const Reference& ref, const oci::Descriptor& desc,
                                      BlobReader& content, const std::string& mount_from) {
  if (content.Size() != static_cast<uint64_t>(desc.size)) {
    return absl::InvalidArgumentError(
        fmt::format("push blob {}: content has {} bytes, "
                    "descriptor says {}",
                    desc.digest.ToString(), content.Size(), desc.size));
  }
  auto hosts = HostsFor(ref, kCapPush);
  if (!hosts.ok()) return hosts.status();
  const RegistryHost& host = hosts->front();
  absl::Status st;
  for (int round = 0; round < 2; ++round) {
    st = UploadBlob(ref, host, desc, content, mount_from);
    if (st.ok() || !IsRetriableError(st)) return st;
    LogWarn("blob upload failed, restarting it",
            {{"digest", desc.digest.ToString()}, {"repository", ref.Name()}});
  }
  return st;
}

absl::Status RegistryClient::UploadBlob(const Reference& ref, const RegistryHost& host,
                                        const oci::Descriptor& desc, BlobReader& content,
                                        const std::string& mount_from) {
  auto exists = BlobExists(ref, desc.digest);
  if (!exists.ok()) return exists.status();
  if (*exists) return absl::OkStatus();
  std::string location;
  {
    Call call;
    call.method = "POST";
    call.actions = "pull,push";
    call.capability = kCapPush;
    call.accept = {202};
    call.path = "blobs/uploads/";
    call.what = "POST blob upload " + desc.digest.ToString();
    if (!mount_from.empty() && mount_from != ref.repository) {
      call.path += fmt::format("?mount={}&from={}", desc.digest.ToString(), mount_from);
      call.extra_scope = fmt::format("repository:{}:pull", mount_from);
      call.accept = {201, 202};
    }
    auto resp = ExecuteOnHost(ref, host, call);
    if (!resp.ok()) return resp.status();
    if (resp->status == 201) return absl::OkStatus();  // mounted
    location = resp->Header("location");
    if (location.empty()) {
      return absl::FailedPreconditionError(
          fmt::format("POST blob upload in {}: 202 without Location", ref.Name()));
    }
    location = ResolveLocation(host.ApiRoot() + "/", location);
  }
  const uint64_t size = content.Size();
  Sha256 hash;
  std::string final_body;
  if (size > config_.upload_chunk_bytes) {
    for (uint64_t off = 0; off < size; off += config_.upload_chunk_bytes) {
      uint64_t n = std::min<uint64_t>(config_.upload_chunk_bytes, size - off);
      auto chunk = content.ReadAt(off, n);
      if (!chunk.ok()) return chunk.status();
      hash.Update(*chunk);
      Call call;
      call.method = "PATCH";
      call.absolute_url = location;
      call.actions = "pull,push";
      call.capability = kCapPush;
      call.accept = {202};
      call.body = *chunk;
      call.timeout = std::chrono::milliseconds(0);
      call.headers.emplace_back("Content-Type", "application/octet-stream");
      call.headers.emplace_back("Content-Range", fmt::format("{}-{}", off, off + n - 1));
      call.what = fmt::format("PATCH blob {} [{}, +{})", desc.digest.ToString(), off, n);
      auto resp = ExecuteOnHost(ref, host, call);
      if (!resp.ok()) return resp.status();
      std::string next = resp->Header("location");
      if (!next.empty()) location = ResolveLocation(location, next);
    }
  } else {
    auto all = content.ReadAt(0, size);
    if (!all.ok()) return all.status();
    final_body = std::move(*all);
    hash.Update(final_body);
  }
  Digest got = hash.Finish();
  if (got != desc.digest) {
    return absl::InvalidArgumentError(
        fmt::format("push blob to {}: content hashes to {}, descriptor says {}", ref.Name(),
                    got.ToString(), desc.digest.ToString()));
  }
  Call call;
  call.method = "PUT";
  call.absolute_url = location + (location.find('?') == std::string::npos ? "?" : "&") +
                      "digest=" + desc.digest.ToString();
  call.actions = "pull,push";
  call.capability = kCapPush;
  call.accept = {201};
  call.body = final_body;
  call.timeout = std::chrono::milliseconds(0);
  call.headers.emplace_back("Content-Type", "application/octet-stream");
  call.what = "PUT blob " + desc.digest.ToString();
  auto resp = ExecuteOnHost(ref, host, call);
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<Digest> RegistryClient::PushManifest(const Reference& ref,
                                                    const std::string& media_type,
                                                    std::string_view bytes) {
  auto hosts = HostsFor(ref, kCapPush);
  if (!hosts.ok()) return hosts.status();
  Digest digest = Digest::Of(bytes);
  std::string target = ref.tag.empty() ? digest.ToString() : ref.tag;
  if (!ref.digest.empty() && ref.tag.empty() && ref.digest != digest) {
    return absl::InvalidArgumentError(
        fmt::format("push manifest to {}: bytes hash to {}", ref.ToString(), digest.ToString()));
  }
  Call call;
  call.method = "PUT";
  call.path = "manifests/" + target;
  call.actions = "pull,push";
  call.capability = kCapPush;
  call.accept = {201};
  call.body = bytes;
  call.headers.emplace_back("Content-Type", media_type);
  call.what = "PUT manifest " + target;
  auto resp = ExecuteOnHost(ref, hosts->front(), call);
  if (!resp.ok()) return resp.status();
  std::string header = resp->Header("docker-content-digest");
  if (!header.empty() && header != digest.ToString()) {
    return absl::DataLossError(fmt::format("push manifest to {}: registry stored {} but we sent {}",
                                           ref.ToString(), header, digest.ToString()));
  }
  return digest;
}

}  // namespace lazypull::registry
