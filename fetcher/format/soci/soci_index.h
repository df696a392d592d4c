// SociIndex: the SOCI index manifest — an OCI image manifest listing one zTOC per indexed layer
// of an image (see shared/formats.md, SOCI section). v1 names the image manifest as its
// `subject` (found through the referrers API); v2 is found through the image manifest's
// `com.amazon.soci.index-digest` annotation inside a "SOCI-enabled" image index. The version
// is the config's mediaType (soci writes no artifactType into the manifest itself).
//
// Value types; thread-compatible. Parsing is of untrusted registry bytes.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/manifest.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

inline constexpr std::string_view kSociIndexV1 = "application/vnd.amazon.soci.index.v1+json";
inline constexpr std::string_view kSociIndexV2 = "application/vnd.amazon.soci.index.v2+json";
inline constexpr std::string_view kZtocMediaType = "application/octet-stream";
inline constexpr std::string_view kSociPrefetchMediaType =
    "application/vnd.amazon.soci.prefetch.v1+json";
// On each zTOC descriptor.
inline constexpr std::string_view kAnnotationLayerDigest = "com.amazon.soci.image-layer-digest";
inline constexpr std::string_view kAnnotationLayerMediaType =
    "com.amazon.soci.image-layer-mediaType";
inline constexpr std::string_view kAnnotationSpanSize = "com.amazon.soci.span-size";
inline constexpr std::string_view kAnnotationDisableXattrs = "com.amazon.soci.disable-xattrs";
// On the index manifest.
inline constexpr std::string_view kAnnotationBuildTool = "com.amazon.soci.build-tool-identifier";
// v2: on the image manifest (and its descriptor): the SOCI index digest; on the SOCI index's
// descriptor in the image index: the image manifest digest.
inline constexpr std::string_view kAnnotationIndexDigest = "com.amazon.soci.index-digest";
inline constexpr std::string_view kAnnotationImageManifestDigest =
    "com.amazon.soci.image-manifest-digest";
// The config blob of every SOCI index: "{}".
inline constexpr std::string_view kEmptyConfig = "{}";

enum class SociIndexVersion { kV1, kV2 };
std::string_view SociIndexArtifactType(SociIndexVersion v);

// One indexed layer.
struct ZtocRef {
  oci::Descriptor ztoc;  // the zTOC blob (mediaType application/octet-stream)
  Digest layer_digest;
  std::string layer_media_type;
  std::optional<uint64_t> span_size;  // from the annotation, when present
  bool disable_xattrs = false;
};

struct SociIndex {
  SociIndexVersion version = SociIndexVersion::kV2;
  std::vector<ZtocRef> ztocs;              // in manifest order
  std::optional<oci::Descriptor> subject;  // v1: the image manifest
  std::string build_tool_identifier;
  // lazypull's fine-index blobs (fine_index.h), listed as layers after the zTOCs so registry
  // GC keeps them; the zTOC descriptors' annotations say which belongs to which layer.
  std::vector<oci::Descriptor> extra_blobs;

  // The zTOC of `layer`, or nullptr (the layer is not indexed: pulled normally).
  const ZtocRef* Find(const Digest& layer) const;
};

// Parses and validates a SOCI index manifest: an OCI manifest whose config mediaType is the v1
// or v2 type; every zTOC layer with a valid image-layer-digest annotation (no layer twice),
// a positive size at most `max_ztoc_size`, and a numeric span size when annotated. Prefetch
// artifacts are skipped; lazypull's fine-index blobs go to extra_blobs. Errors: InvalidArgument
// naming the field ("soci index: ...").
absl::StatusOr<SociIndex> ParseSociIndex(std::string_view bytes,
                                         uint64_t max_ztoc_size = 512ull << 20);

// The manifest `soci create` / `soci convert` would write for these zTOCs (config = the empty
// JSON object with the version's mediaType; subject for v1 only), then extra_blobs. Serialize with
// oci::SerializeManifest.
oci::Manifest MakeSociIndexManifest(const SociIndex& index);

// v2 discovery: the SOCI index digest an image manifest names; nullopt without the
// annotation, InvalidArgument for a malformed digest.
absl::StatusOr<std::optional<Digest>> SociIndexDigestOf(const oci::Manifest& image_manifest);

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_H_
