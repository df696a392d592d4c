#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/registry/registry_call.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"

namespace lazypull::registry {

using namespace internal;  // NOLINT(build/namespaces): this module's own helpers

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
