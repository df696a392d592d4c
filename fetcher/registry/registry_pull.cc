#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/status/status.h"
#include "base/atomic_file.h"
#include "base/logging.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/registry/registry_call.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"

namespace lazypull::registry {

using namespace internal;  // NOLINT: this module's own helpers

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

absl::StatusOr<ResolvedImage> RegistryClient::Resolve(
    const Reference& ref, const std::optional<oci::Platform>& platform,
    const std::function<void(const oci::Descriptor&)>& on_index_entry) {
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
    if (on_index_entry) on_index_entry(*chosen);
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
  call.blob = desc.digest.ToString();
  call.on_attempt = [&](HttpHeaders* h) {
    attempt_start = received;
    sink_error = absl::OkStatus();
    overlong = false;
    if (received > 0) h->emplace_back("Range", fmt::format("bytes={}-", received));
  };
  call.sink = [&](const HttpResponse& head, std::string_view data) -> bool {
    if (head.status == 206 && body_pos < attempt_start) body_pos = attempt_start;
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
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(path, 0644);
  if (!file.ok()) return file.status();
  auto st = FetchBlobStream(ref, desc, [&](uint64_t off, std::string_view d) -> absl::Status {
    size_t done = 0;
    while (done < d.size()) {
      ssize_t n = ::pwrite(file->fd(), d.data() + done, d.size() - done, off + done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(
            fmt::format("write {}: {}", file->temp_path(), std::strerror(errno)));
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;  // `file` removes its temp file
  return file->Commit();
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

}  // namespace lazypull::registry
