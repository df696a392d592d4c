#include "fetcher/format/soci/soci_index_finder.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "base/logging.h"
#include "fetcher/format/status_util.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

struct ImageManifest {
  Digest digest;
  oci::Manifest manifest;
};

// The image manifest `image` / `manifest_digest` names (for a tag naming an index: the
// platform's image manifest, never an artifact listed under the same platform).
absl::StatusOr<ImageManifest> FetchImageManifest(registry::RegistryClient& client,
                                                 const registry::Reference& image,
                                                 const std::optional<Digest>& manifest_digest,
                                                 const SociFinderOptions& options) {
  registry::Reference ref = image;
  if (manifest_digest) ref.digest = *manifest_digest;
  auto top = client.FetchManifest(ref);
  if (!top.ok()) return top.status();
  if (oci::IsIndexType(top->descriptor.media_type)) {
    auto index = oci::ParseIndex(top->bytes, top->descriptor.media_type);
    if (!index.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("soci: index {}: {}", ref.ToString(), format::Msg(index.status())));
    }
    auto chosen =
        oci::SelectPlatformManifest(*index, options.platform.value_or(oci::HostPlatform()));
    if (!chosen.ok()) return chosen.status();
    registry::Reference by_digest = ref;
    by_digest.digest = chosen->digest;
    auto m = client.FetchManifest(by_digest);
    if (!m.ok()) return m.status();
    if (m->descriptor.size != chosen->size) {
      return absl::InvalidArgumentError(
          fmt::format("soci: manifest {} of {}: size {} but its index says {}",
                      chosen->digest.ToString(), ref.Name(), m->descriptor.size, chosen->size));
    }
    top = std::move(m);
  }
  if (!oci::IsManifestType(top->descriptor.media_type)) {
    return absl::InvalidArgumentError(fmt::format("soci: {}: media type {} is not a manifest",
                                                  ref.ToString(), top->descriptor.media_type));
  }
  auto manifest = oci::ParseManifest(top->bytes, top->descriptor.media_type);
  if (!manifest.ok()) {
    return absl::InvalidArgumentError(fmt::format("soci: manifest {} of {}: {}",
                                                  top->descriptor.digest.ToString(), ref.Name(),
                                                  format::Msg(manifest.status())));
  }
  return ImageManifest{top->descriptor.digest, std::move(*manifest)};
}

// Fetches the SOCI index manifest `digest` (verified by it) and parses it.
absl::StatusOr<FoundSociIndex> FetchIndex(registry::RegistryClient& client,
                                          const registry::Reference& image, const Digest& digest,
                                          SociIndexVersion want, const Digest& image_manifest,
                                          const SociFinderOptions& options) {
  registry::Reference ref = image;
  ref.tag.clear();
  ref.digest = digest;
  auto fetched = want == SociIndexVersion::kV2 && options.prefetch != nullptr
                     ? options.prefetch->Fetch(client, ref)
                     : client.FetchManifest(ref);
  if (!fetched.ok()) {
    return absl::Status(fetched.status().code(),
                        fmt::format("soci index {} of image manifest {}: {}", digest.ToString(),
                                    image_manifest.ToString(), format::Msg(fetched.status())));
  }
  auto index = ParseSociIndex(fetched->bytes, options.max_ztoc_size);
  if (!index.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{} ({} of {})", format::Msg(index.status()), digest.ToString(), ref.Name()));
  }
  if (index->version != want) {
    return absl::InvalidArgumentError(
        fmt::format("soci index {} of {}: config media type {} but found as a {} index",
                    digest.ToString(), ref.Name(), SociIndexArtifactType(index->version),
                    want == SociIndexVersion::kV1 ? "v1 (referrer)" : "v2 (annotation)"));
  }
  if (want == SociIndexVersion::kV1 &&
      (!index->subject || index->subject->digest != image_manifest)) {
    return absl::InvalidArgumentError(fmt::format(
        "soci index {} of {}: subject {} is not the image manifest {}", digest.ToString(),
        ref.Name(), index->subject ? index->subject->digest.ToString() : std::string("(none)"),
        image_manifest.ToString()));
  }
  FoundSociIndex found;
  found.index = std::move(*index);
  found.descriptor = fetched->descriptor;
  found.image_manifest_digest = image_manifest;
  return found;
}

}  // namespace

absl::StatusOr<std::optional<FoundSociIndex>> FindSociIndex(
    registry::RegistryClient& client, const registry::Reference& image,
    const std::optional<Digest>& manifest_digest, const SociFinderOptions& options) {
  auto manifest = FetchImageManifest(client, image, manifest_digest, options);
  if (!manifest.ok()) return manifest.status();
  return FindSociIndexOfManifest(client, image, manifest->digest, manifest->manifest, options);
}

absl::StatusOr<std::optional<FoundSociIndex>> FindSociIndexOfManifest(
    registry::RegistryClient& client, const registry::Reference& image,
    const Digest& manifest_digest, const oci::Manifest& manifest,
    const SociFinderOptions& options) {
  auto v2 = SociIndexDigestOf(manifest);
  if (!v2.ok()) {
    return absl::InvalidArgumentError(fmt::format("{} (image manifest {} of {})",
                                                  format::Msg(v2.status()),
                                                  manifest_digest.ToString(), image.Name()));
  }
  if (*v2) {
    auto found = FetchIndex(client, image, **v2, SociIndexVersion::kV2, manifest_digest, options);
    if (!found.ok()) return found.status();
    LogInfo("soci index found", {{"image", image.ToString()},
                                 {"manifest", manifest_digest.ToString()},
                                 {"index", found->descriptor.digest.ToString()},
                                 {"version", "v2"},
                                 {"ztocs", found->index.ztocs.size()}});
    return std::optional<FoundSociIndex>(std::move(*found));
  }
  if (!options.v1) return std::optional<FoundSociIndex>();

  auto referrers = client.FetchReferrers(image, manifest_digest, kSociIndexV1);
  if (!referrers.ok()) return referrers.status();
  if (referrers->manifests.empty()) return std::optional<FoundSociIndex>();
  // soci-snapshotter's selection policy: the first one listed.
  const oci::Descriptor& chosen = referrers->manifests.front();
  auto found =
      FetchIndex(client, image, chosen.digest, SociIndexVersion::kV1, manifest_digest, options);
  if (!found.ok()) return found.status();
  if (found->descriptor.size != chosen.size) {
    return absl::InvalidArgumentError(
        fmt::format("soci index {} of {}: size {} but the referrers list says {}",
                    chosen.digest.ToString(), image.Name(), found->descriptor.size, chosen.size));
  }
  LogInfo("soci index found", {{"image", image.ToString()},
                               {"manifest", manifest_digest.ToString()},
                               {"index", found->descriptor.digest.ToString()},
                               {"version", "v1"},
                               {"via", referrers->from_tag_schema ? "tag schema" : "referrers api"},
                               {"ztocs", found->index.ztocs.size()}});
  return std::optional<FoundSociIndex>(std::move(*found));
}

}  // namespace lazypull::soci
