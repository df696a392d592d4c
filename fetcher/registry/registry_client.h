// RegistryClient: an OCI distribution client — resolve, fetch (digest-verified), range reads,
// and push — over HttpTransport, with per-host auth (Authorizer), containerd hosts.toml
// mirrors with fallback to the upstream (range reads routed around mirrors that ignore Range,
// per blob: mirror_routes.h), retries with jittered exponential backoff, a bounded
// total time per operation, and a cap on concurrent requests per host.
//
// Errors name host, repository, digest, HTTP status, and what was retried. Codes: NotFound
// (404 / unknown manifest or blob), Unauthenticated / PermissionDenied (auth), DataLoss (bytes
// that fail verification after all retries), Unavailable / DeadlineExceeded (transport),
// FailedPrecondition (TLS verification), InvalidArgument (malformed manifests, bad input).
#ifndef LAZYPULL_FETCHER_REGISTRY_REGISTRY_CLIENT_H_
#define LAZYPULL_FETCHER_REGISTRY_REGISTRY_CLIENT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/platform.h"
#include "fetcher/registry/authorizer.h"
#include "fetcher/registry/credentials.h"
#include "fetcher/registry/hosts.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/mirror_routes.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_config.h"
#include "lazypull/blob_reader.h"

namespace lazypull::registry {

// A manifest or index as fetched: its descriptor (media type, digest of `bytes`, size) and the
// exact bytes (the digest is over them).
struct FetchedManifest {
  oci::Descriptor descriptor;
  std::string bytes;
};

// What FetchReferrers found: the descriptors of the manifests naming the subject.
struct Referrers {
  std::vector<oci::Descriptor> manifests;
  // The registry has no referrers API: the list came from the "sha256-<hex>" tag (empty when
  // the tag does not exist). A pusher of a referrer must then update that tag itself.
  bool from_tag_schema = false;
};

// The result of resolving a reference to one platform's image manifest.
struct ResolvedImage {
  Reference reference;
  oci::Descriptor manifest_descriptor;
  std::string manifest_bytes;
  oci::Manifest manifest;
  std::optional<oci::Descriptor> index_descriptor;  // set when the tag named an index
};

// Counters for tests and `lazypull status` (monotonic).
struct RegistryStats {
  uint64_t requests = 0;
  uint64_t retries = 0;
  uint64_t bytes_received = 0;
  uint64_t mirror_fallbacks = 0;  // a mirror failed (error, stall): the next host was asked
  // A mirror answered a range read with other bytes than asked (pull-through cache that has
  // not stored the blob yet): abandoned at its headers, the next host was asked.
  uint64_t mirror_range_refusals = 0;
  // Blob reads that skipped a mirror: marked "no ranges" for the blob (range reads), or
  // excluded for it after bad bytes (any read).
  uint64_t mirror_skips = 0;
  // Chunks that failed verification after a mirror delivered their bytes (ReportBadBytes).
  uint64_t mirror_bad_bytes = 0;
};

// Thread-safe: all methods may be called concurrently. BlobReaders from OpenBlob borrow the
// client: it must outlive them.
class RegistryClient {
 public:
  // `transport` is owned (NewCurlTransport() in production; a fake in unit tests).
  RegistryClient(RegistryConfig config, std::unique_ptr<HttpTransport> transport);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  const RegistryConfig& config() const { return config_; }

  // --- Pull side -------------------------------------------------------------------------

  // GET the manifest or index named by `ref` (its digest if set, else its tag). Verifies the
  // bytes against the reference digest, or against the Docker-Content-Digest header when
  // resolving a tag; retries on mismatch, then DataLoss.
  absl::StatusOr<FetchedManifest> FetchManifest(const Reference& ref);

  // The referrers of manifest `subject` in ref's repository (OCI distribution 1.1): GET
  // /v2/<name>/referrers/<digest>, filtered by `artifact_type` when not empty. A registry
  // without that API (404, as distribution 2.8 answers) is asked for the referrers tag schema
  // instead: the image index tagged "sha256-<hex>" (no tag: no referrers). Only the first
  // page of a paginated answer (Link header) is read; bodies over 4 MiB are refused.
  // InvalidArgument for an answer that is not an image index.
  absl::StatusOr<Referrers> FetchReferrers(const Reference& ref, const Digest& subject,
                                           std::string_view artifact_type = {});

  // Resolves `ref` to the image manifest for `platform` (default: HostPlatform()), following
  // an index / manifest list. NotFound when the index has no matching platform.
  // `on_index_entry` (may be empty) is called, when `ref` names an index, with the index's
  // descriptor of the chosen manifest (its annotations included) just before that manifest is
  // fetched, so a caller can start fetches the entry names in parallel (SOCI discovery). It
  // must not block.
  absl::StatusOr<ResolvedImage> Resolve(
      const Reference& ref, const std::optional<oci::Platform>& platform = std::nullopt,
      const std::function<void(const oci::Descriptor&)>& on_index_entry = {});

  // GET a whole blob into memory, verified against desc.digest and desc.size. ResourceExhausted
  // if desc.size > max_bytes.
  absl::StatusOr<std::string> FetchBlob(const Reference& ref, const oci::Descriptor& desc,
                                        uint64_t max_bytes = 256ull << 20);
  // Fetches and parses the image config of `manifest`.
  absl::StatusOr<oci::ImageConfig> FetchConfig(const Reference& ref, const oci::Manifest& manifest);

  // Streams a whole blob to `sink` as (offset, bytes) pieces in order. A dropped connection
  // resumes with a Range request from the last byte received; a digest mismatch at the end
  // restarts from offset 0 (so the sink must accept rewrites, e.g. pwrite). Returns OK only
  // after the full blob matched desc.digest.
  absl::Status FetchBlobStream(const Reference& ref, const oci::Descriptor& desc,
                               const std::function<absl::Status(uint64_t, std::string_view)>& sink);
  // FetchBlobStream into `path` with an AtomicFile (base/atomic_file.h): `path` appears, 0644,
  // only when verified and durable.
  absl::Status FetchBlobToFile(const Reference& ref, const oci::Descriptor& desc,
                               const std::string& path);

  // Reads [offset, offset+length) of a blob with a Range request. Accepts 206 (Content-Range
  // must match exactly) and 200 (the full body; only the needed part is kept). A short or
  // mismatching answer is retried. The bytes are not verified here (a range is rarely a whole
  // chunk): callers verify what they decode. OutOfRange if the range exceeds desc.size.
  // `cancelled` (may be empty) aborts the transfer with Cancelled when true.
  absl::StatusOr<std::string> ReadRange(const Reference& ref, const oci::Descriptor& desc,
                                        uint64_t offset, uint64_t length,
                                        const std::function<bool()>& cancelled = {});

  // Streams `ranges` of a blob to `sink` with BlobReader::StreamRanges' contract. Several
  // ranges go out as ONE request (`Range: bytes=a-b,c-d,...`, answered multipart/byteranges)
  // when the registry supports it; whether it does is learned from its first answer and kept
  // per registry host (a 200 with the whole blob, or a single range, means no: the bytes that
  // came are used, the rest is fetched with one range per request, ranges within
  // config.merge_gap_bytes sharing one, up to min(8, max_concurrency_per_host) in parallel).
  // Transport errors are retried from where each range stands. A malformed multipart answer is
  // DataLoss (logged), not retried, and turns multi-range off for the host. Sink errors abort
  // and are returned as is. InvalidArgument for ranges that break the contract.
  // `cancelled` (may be empty) aborts the transfer and retries with Cancelled when true.
  absl::Status StreamRanges(const Reference& ref, const oci::Descriptor& desc,
                            std::span<const ByteRange> ranges, const BlobReader::Sink& sink,
                            const std::function<bool()>& cancelled = {});

  // Bytes of blob `desc` in `range`, as delivered by this client, failed verification (a
  // chunk digest mismatch). Every mirror that delivered bytes overlapping `range` is not used
  // for this blob again (logged). Returns true when such a mirror exists, i.e. reading the
  // bytes again asks another host.
  bool ReportBadBytes(const Reference& ref, const oci::Descriptor& desc, ByteRange range);

  // When the first host that range reads of `desc` would go to is a mirror filling itself
  // with the blob (it refused ranges of it recently: MirrorRoutes::FillingUntil): the time it
  // is asked again. A background fetch waits until then rather than read the upstream (the
  // fleet's egress, README "Many nodes"). When that time has come, this call probes the
  // mirror itself with a small range read (so that programs' reads never pay for a refused
  // probe) and answers nullopt if it serves ranges now, else the next retry time. nullopt
  // also when range reads would go out now, to a mirror or the upstream, and when hosts.toml
  // cannot be read (the read reports that). May block for one request to the mirror.
  // `cancelled` (may be empty) aborts the probe.
  std::optional<std::chrono::steady_clock::time_point> MirrorReadyAt(
      const Reference& ref, const oci::Descriptor& desc,
      const std::function<bool()>& cancelled = {});

  // Whether `registry_host` answered a multi-range request with multipart/byteranges (true),
  // did not (false), or has not been asked yet (nullopt).
  std::optional<bool> MultiRangeSupport(const std::string& registry_host) const;

  // A BlobReader over a registry blob: ReadAt is ReadRange, StreamRanges as above. A mirror is
  // sent `?ns=<registry>` as containerd does.
  std::unique_ptr<BlobReader> OpenBlob(const Reference& ref, const oci::Descriptor& desc);

  // --- Push side -------------------------------------------------------------------------

  // HEAD a blob: true if present, false on 404.
  absl::StatusOr<bool> BlobExists(const Reference& ref, const Digest& digest);

  // Uploads a blob unless already present. Tries a cross-repository mount from `mount_from`
  // (a repository on the same registry) first when given. Blobs up to
  // config.upload_chunk_bytes are uploaded monolithically (POST + PUT), larger ones in chunks
  // (PATCH with Content-Range, then PUT ?digest=). `content` must have size desc.size; its
  // bytes are hashed while uploading and must match desc.digest (else InvalidArgument before
  // the final PUT).
  absl::Status PushBlob(const Reference& ref, const oci::Descriptor& desc, BlobReader& content,
                        const std::string& mount_from = "");
  absl::Status PushBlob(const Reference& ref, const oci::Descriptor& desc,
                        std::string_view content);

  // PUTs a manifest or index under ref's tag (or digest when it has no tag). Returns the
  // digest of `bytes`; a Docker-Content-Digest answer that differs is DataLoss.
  absl::StatusOr<Digest> PushManifest(const Reference& ref, const std::string& media_type,
                                      std::string_view bytes);

  // Lists `referrer` (a manifest already pushed whose `subject` is `subject`) among the
  // referrers of `subject`. A registry with the referrers API does that itself on the push;
  // otherwise the "sha256-<hex>" tag index is fetched (or started), the descriptor added
  // unless already listed, and the index pushed under that tag again. Not atomic against
  // another writer of the same tag (neither is the tag schema). Returns whether the tag schema
  // was used.
  absl::StatusOr<bool> AddReferrer(const Reference& ref, const Digest& subject,
                                   const oci::Descriptor& referrer);

  RegistryStats stats() const;
  Authorizer& authorizer() { return *authorizer_; }

 private:
  struct Call;
  class HostLimiter;
  class RegistryBlobReader;

  // The scope of `ref`'s blobs for MirrorRoutes: registry and repository.
  static std::string MirrorScope(const Reference& ref) { return ref.host + "/" + ref.repository; }
  absl::StatusOr<std::vector<RegistryHost>> HostsFor(const Reference& ref, uint32_t capability);
  // Runs `call` against the hosts for `ref` that have the capability, in order, falling back to
  // the next host on failure (except NotFound from the upstream). Returns the response of the
  // host that answered with an accepted status.
  absl::StatusOr<HttpResponse> Execute(const Reference& ref, Call& call);
  // Runs `call` against one host with auth, redirects and retries.
  // `last_host`: no host comes after this one (a mirror's range answer is then used as is).
  absl::StatusOr<HttpResponse> ExecuteOnHost(const Reference& ref, const RegistryHost& host,
                                             Call& call, bool last_host = true);
  // Asks mirror `host` alone for the first bytes of blob `desc` with a Range request: true if
  // it answered that range (206), false if it refused it (abandoned at its headers), an
  // error if it failed.
  absl::StatusOr<bool> ProbeMirrorRanges(const Reference& ref, const oci::Descriptor& desc,
                                         const RegistryHost& host,
                                         const std::function<bool()>& cancelled);
  // One multi-range request for `ranges` (at least 2), retried for what is missing.
  absl::Status StreamMultipart(const Reference& ref, const oci::Descriptor& desc,
                               std::span<const ByteRange> ranges, std::span<uint64_t> done,
                               const BlobReader::Sink& sink,
                               const std::function<bool()>& cancelled);
  // One single-range request covering `ranges` (gap bytes are discarded), retried from where
  // each range stands.
  absl::Status StreamCovering(const Reference& ref, const oci::Descriptor& desc,
                              std::span<const ByteRange> ranges, std::span<uint64_t> done,
                              const BlobReader::Sink& sink, const std::function<bool()>& cancelled);
  void LearnMultiRange(const std::string& registry_host, bool supported);
  absl::Status UploadBlob(const Reference& ref, const RegistryHost& host,
                          const oci::Descriptor& desc, BlobReader& content,
                          const std::string& mount_from);

  const RegistryConfig config_;
  std::unique_ptr<HttpTransport> transport_;
  CredentialStore credentials_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<HostLimiter> limiter_;
  // hosts.toml is re-read at most every few seconds per registry name (containerd re-reads it
  // per resolve; lazypull reads per range request, so it caches briefly).
  std::mutex hosts_mu_;
  std::map<std::string, std::pair<std::chrono::steady_clock::time_point, std::vector<RegistryHost>>>
      hosts_cache_;
  mutable std::mutex multi_range_mu_;
  std::map<std::string, bool> multi_range_;  // by registry host
  // Which mirrors serve ranges of which blobs (pull-through caches; mirror_routes.h).
  std::unique_ptr<MirrorRoutes> routes_;
  std::atomic<uint64_t> requests_{0}, retries_{0}, bytes_received_{0}, mirror_fallbacks_{0};
  std::atomic<uint64_t> mirror_range_refusals_{0}, mirror_skips_{0}, mirror_bad_bytes_{0};
};

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_REGISTRY_CLIENT_H_
