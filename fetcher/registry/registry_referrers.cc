// RegistryClient::FetchReferrers: the OCI referrers API with the referrers tag schema as the
// fallback for registries that predate it (distribution 2.8).
#include <cctype>

#include "absl/status/status.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/registry/registry_call.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"

namespace lazypull::registry {

using namespace internal;  // NOLINT(build/namespaces): this module's own helpers

namespace {

constexpr uint64_t kMaxReferrersBytes = 4 << 20;

// Query-string escaping of an artifact type ("+" and "/" are reserved there).
std::string EscapeQueryValue(std::string_view v) {
  std::string out;
  for (unsigned char c : v) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

absl::StatusOr<Referrers> FromIndexBytes(std::string_view bytes, std::string_view artifact_type,
                                         const std::string& what, bool from_tag_schema) {
  auto index = oci::ParseIndex(bytes, oci::kOciIndex);
  if (!index.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: not an image index: {}", what, std::string(index.status().message())));
  }
  Referrers out;
  out.from_tag_schema = from_tag_schema;
  for (oci::Descriptor& d : index->manifests) {
    // The registry may ignore the filter (the spec lets it): apply it here too.
    if (!artifact_type.empty() && d.artifact_type != artifact_type) continue;
    out.manifests.push_back(std::move(d));
  }
  return out;
}

}  // namespace

absl::StatusOr<Referrers> RegistryClient::FetchReferrers(const Reference& ref,
                                                         const Digest& subject,
                                                         std::string_view artifact_type) {
  Call call;
  call.path = "referrers/" + subject.ToString();
  if (!artifact_type.empty()) call.path += "?artifactType=" + EscapeQueryValue(artifact_type);
  call.what = "GET referrers of " + subject.ToString();
  call.capability = kCapPull;
  call.headers.emplace_back("Accept", std::string(oci::kOciIndex));
  call.max_body = kMaxReferrersBytes;
  auto resp = Execute(ref, call);
  if (resp.ok()) {
    return FromIndexBytes(resp->body, artifact_type,
                          fmt::format("referrers of {} in {}", subject.ToString(), ref.Name()),
                          /*from_tag_schema=*/false);
  }
  if (!absl::IsNotFound(resp.status())) return resp.status();

  // No referrers API: the tag schema (OCI distribution spec, "Referrers Tag Schema").
  Reference tag_ref = ref;
  tag_ref.digest = Digest();
  tag_ref.tag = "sha256-" + subject.hex();
  auto tagged = FetchManifest(tag_ref);
  if (!tagged.ok()) {
    if (absl::IsNotFound(tagged.status())) {
      Referrers none;
      none.from_tag_schema = true;
      return none;
    }
    return tagged.status();
  }
  if (!oci::IsIndexType(tagged->descriptor.media_type)) {
    return absl::InvalidArgumentError(
        fmt::format("referrers tag {} of {}: media type {} (want an image index)", tag_ref.tag,
                    ref.Name(), tagged->descriptor.media_type));
  }
  return FromIndexBytes(tagged->bytes, artifact_type,
                        fmt::format("referrers tag {} of {}", tag_ref.tag, ref.Name()),
                        /*from_tag_schema=*/true);
}

absl::StatusOr<bool> RegistryClient::AddReferrer(const Reference& ref, const Digest& subject,
                                                 const oci::Descriptor& referrer) {
  auto existing = FetchReferrers(ref, subject);
  if (!existing.ok()) return existing.status();
  if (!existing->from_tag_schema) return false;
  oci::Index index;
  index.media_type = std::string(oci::kOciIndex);
  index.manifests = std::move(existing->manifests);
  for (const oci::Descriptor& d : index.manifests) {
    if (d.digest == referrer.digest) return true;
  }
  index.manifests.push_back(referrer);
  Reference tag_ref = ref;
  tag_ref.digest = Digest();
  tag_ref.tag = "sha256-" + subject.hex();
  auto pushed = PushManifest(tag_ref, std::string(oci::kOciIndex), oci::SerializeIndex(index));
  if (!pushed.ok()) return pushed.status();
  return true;
}

}  // namespace lazypull::registry
