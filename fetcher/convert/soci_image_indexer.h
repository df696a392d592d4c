// CreateSociIndex: the SOCI index of an image, as `soci convert` (v2) or `soci create` (v1)
// of awslabs/soci-snapshotter would make it, behind `lazypull index create`.
//
// For each gzip layer of the chosen platform's image manifest at least `min_layer_size`
// bytes, a zTOC is built with the streaming BuildZtoc (memory independent of the layer size:
// a layer from a registry is downloaded to a verified scratch file, then read front to back).
// The SOCI index manifest lists the zTOCs (mediaType application/octet-stream, annotated with
// the layer's digest, media type and span size), its config is the empty JSON object "{}"
// with the version's media type, and it carries com.amazon.soci.build-tool-identifier. With
// fine_index, each zTOC descriptor also names the layer's fine index blobs
// (dev.lazypull.soci.fine-*), which follow the zTOCs as layers of the manifest.
//
// v2 (SOCI-enabled image) written to `dst`: the image manifest, as an OCI manifest (a Docker
// one is converted as soci does: manifest and config media types only), annotated
// com.amazon.soci.index-digest, and an OCI image index under dst's reference listing that
// manifest FIRST (with its platform) and the SOCI index manifest second (artifactType v2, same
// platform, annotated com.amazon.soci.image-manifest-digest). containerd takes the first
// manifest that matches the platform, so it pulls the image; layers and config are copied
// byte for byte. Only the chosen platform is kept (other platforms of a multi-platform
// source are dropped from the output index).
//
// v1: zTOCs and the index manifest (subject = the source image manifest, unchanged) are
// written by digest to `dst`, which must hold the image (the source repository); the caller
// then lists it as a referrer (RegistryClient::AddReferrer).
//
// Not thread-safe with respect to the stores; blocking.
#ifndef LAZYPULL_FETCHER_CONVERT_SOCI_IMAGE_INDEXER_H_
#define LAZYPULL_FETCHER_CONVERT_SOCI_IMAGE_INDEXER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/convert/image_store.h"
#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/platform.h"

namespace lazypull::convert {

struct SociIndexOptions {
  uint64_t span_size = soci::kDefaultSpanSize;
  // soci::ZtocBuildOptions::large_file_spans (0: soci's checkpoints exactly).
  uint64_t large_file_spans = 0;
  uint64_t min_layer_size = soci::kDefaultMinLayerSize;
  // Also write lazypull's fine index per zTOC (fine_index.h; a second pass over each layer):
  // checkpoints every `fine_span_size` uncompressed bytes (plus the large-file rule), windows
  // in their own blob. soci's readers ignore it; lazypull's daemon prefers it.
  bool fine_index = true;
  uint64_t fine_span_size = soci::kDefaultFineSpanSize;
  soci::SociIndexVersion version = soci::SociIndexVersion::kV2;
  std::string build_tool_identifier = "lazypull index create";
  // The platform indexed in a multi-platform source (default: the host's).
  std::optional<oci::Platform> platform;
  // An existing directory, owned by the caller, for one layer's scratch copy at a time.
  std::string work_dir;
};

struct SociIndexedLayer {
  oci::Descriptor layer;
  std::optional<oci::Descriptor> ztoc;          // unset: no zTOC (see skipped)
  std::optional<oci::Descriptor> fine_ztoc;     // with fine_index
  std::optional<oci::Descriptor> fine_windows;  // with fine_index
  size_t fine_spans = 0;
  std::string skipped;  // why not, e.g. "smaller than min-layer-size"
  size_t spans = 0;
  size_t files = 0;
};

struct SociIndexResult {
  oci::Descriptor soci_index;            // the SOCI index manifest
  oci::Descriptor image_manifest;        // v2: the annotated manifest in dst; v1: the source one
  std::optional<oci::Descriptor> root;   // v2: the image index stored under dst's reference
  std::vector<SociIndexedLayer> layers;  // in manifest order
};

// Called after each layer (for progress output); may be empty.
using SociLayerDone = std::function<void(const SociIndexedLayer&)>;

// Errors: NotFound (no manifest for the platform), FailedPrecondition when no layer got a zTOC
// (soci's "no ztocs created": nothing to index), DataLoss for a corrupt gzip or tar stream
// (BuildZtoc's), the stores' errors. Blobs go to `dst` as layers are done; the manifests and
// the index last, so dst's reference never names a partial image.
absl::StatusOr<SociIndexResult> CreateSociIndex(ImageStore& src, ImageStore& dst,
                                                const SociIndexOptions& options,
                                                const SociLayerDone& on_layer = {});

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_SOCI_IMAGE_INDEXER_H_
