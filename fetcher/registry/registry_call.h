// Internals shared by the registry client's translation units (registry_client.cc: hosts,
// auth, retries; registry_pull.cc; registry_ranges.cc; registry_push.cc). Not a public API.
#ifndef LAZYPULL_FETCHER_REGISTRY_REGISTRY_CALL_H_
#define LAZYPULL_FETCHER_REGISTRY_REGISTRY_CALL_H_

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/registry_client.h"

namespace lazypull::registry {

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
  std::function<bool(const HttpResponse&, std::string_view)> sink;
  std::function<void(HttpHeaders*)> on_attempt;  // resets per-attempt state, may add headers
  // Checks an accepted response. DataLoss / Unavailable are retried; other errors returned.
  std::function<absl::Status(const HttpResponse&)> validate;
  // Whether a DataLoss from `validate` is retried (a digest mismatch is; a malformed answer
  // that would come back the same is not).
  bool retry_data_loss = true;
  // True aborts the call (in a transfer, while waiting for a connection slot or a backoff)
  // with Cancelled. Empty = never.
  std::function<bool()> cancelled;
  // A blob GET: the blob's digest. A mirror that served bad bytes of it (MirrorRoutes) is
  // skipped.
  std::string blob;
  // A range read of `blob` asking for bytes within this span. A mirror marked "no ranges" for
  // the blob is skipped; a mirror's 2xx answer that is not the asked range (a 200, or a
  // single-part 206 that does not start at the first byte asked) is abandoned at its headers,
  // and the next host is asked (not when the mirror is the last host: then its bytes are used
  // as an upstream's are).
  std::optional<ByteRange> range_span;
  // Set by ExecuteOnHost: the last host abandoned the answer as above.
  bool range_refused = false;
};

namespace internal {

// scheme://host[:port] of `url`.
std::string Origin(const std::string& url);
// host[:port] of `url`.
std::string HostOfUrl(const std::string& url);
// `host` without its port.
std::string HostnameOnly(const std::string& host);
// Resolves a Location header against the URL that answered it.
std::string ResolveLocation(const std::string& base_url, const std::string& location);
bool IsRetriableStatus(int s);
// Unavailable, DeadlineExceeded and DataLoss are worth another attempt.
bool IsRetriableError(const absl::Status& st);
// " (CODE: message)" from a registry error body, or "".
std::string ErrorSummary(const HttpResponse& r);
// The media type of a response, without parameters.
std::string ContentTypeOf(const HttpResponse& r);

}  // namespace internal
}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_REGISTRY_CALL_H_
