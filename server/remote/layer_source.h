// LayerSource: where a lazy layer comes from, as derived from the labels containerd passes to
// Prepare, and as persisted in the committed snapshot's labels so the layer can be re-mounted
// at daemon start without asking containerd.
//
// Accepted label sets (see shared/e2e-notes.md):
//   CRI (containerd's snapshotters.AppendInfoHandlerWrapper):
//     containerd.io/snapshot/cri.image-ref, cri.layer-digest, cri.manifest-digest,
//     cri.image-layers
//   stargz (ctr-remote images rpull, nerdctl):
//     containerd.io/snapshot/remote/stargz.reference, stargz.digest, stargz.layers
// Layer descriptor annotations that containerd forwards as labels (only keys starting with
// `containerd.io/snapshot/`, e.g. containerd.io/snapshot/stargz/toc.digest) are collected into
// `label_annotations`; what is missing there comes from the manifest.
//
// Value types; thread-compatible.
#ifndef LAZYPULL_SERVER_REMOTE_LAYER_SOURCE_H_
#define LAZYPULL_SERVER_REMOTE_LAYER_SOURCE_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "lazypull/digest.h"
#include "server/snapshot_info.h"

namespace lazypull::remote {

inline constexpr char kCriImageRefLabel[] = "containerd.io/snapshot/cri.image-ref";
inline constexpr char kCriLayerDigestLabel[] = "containerd.io/snapshot/cri.layer-digest";
inline constexpr char kCriManifestDigestLabel[] = "containerd.io/snapshot/cri.manifest-digest";
inline constexpr char kStargzReferenceLabel[] = "containerd.io/snapshot/remote/stargz.reference";
inline constexpr char kStargzDigestLabel[] = "containerd.io/snapshot/remote/stargz.digest";
// Comma-separated digests of the image's layers (truncated by containerd to fit a label).
inline constexpr char kCriImageLayersLabel[] = "containerd.io/snapshot/cri.image-layers";
inline constexpr char kStargzLayersLabel[] = "containerd.io/snapshot/remote/stargz.layers";

// Labels lazypull adds to a committed remote snapshot (the persisted LayerSource).
inline constexpr char kSourceRefLabel[] = "containerd.io/snapshot/lazypull.ref";
inline constexpr char kSourceLayerLabel[] = "containerd.io/snapshot/lazypull.layer";
// The lazy format a remote snapshot is served in ("estargz", "zstd:chunked", "soci"), for
// clients (`lazypull rpull` prints it).
inline constexpr char kFormatLabel[] = "containerd.io/snapshot/lazypull.format";

// What Prepare's labels say about a layer.
struct LayerSource {
  std::string image_ref;                  // as sent: "127.0.0.1:5000/app:v1" (tag or digest)
  Digest layer_digest;                    // the compressed layer blob
  std::optional<Digest> manifest_digest;  // CRI sends it; stargz does not
  // Descriptor annotations that arrived as labels (e.g. the eStargz TOC digest).
  std::map<std::string, std::string> label_annotations;
  // The image's layers named by cri.image-layers / stargz.layers (may be a prefix when
  // containerd truncated the label; empty when absent).
  std::vector<Digest> image_layers;
};

// Extracts the source from Prepare labels. NotFound when the labels name no remote source
// (neither label set present); InvalidArgument when present but malformed (bad digest or
// reference). CRI labels win when both sets are present.
absl::StatusOr<LayerSource> LayerSourceFromLabels(const Labels& labels);

// A layer fully resolved against its manifest: everything needed to open it again.
struct ResolvedLayer {
  std::string image_ref;  // pinned to the manifest digest when known ("host/repo@sha256:…")
  oci::Descriptor layer;  // media type, digest, size, merged annotations
  // Why the layer has no SOCI zTOC when discovery failed (for the fallback log line). Not
  // persisted.
  std::string soci_note{};
};

// The labels that persist `layer` in a committed snapshot (kSourceRefLabel, kSourceLayerLabel).
Labels ResolvedLayerToLabels(const ResolvedLayer& layer);

// Reads them back. NotFound if the labels carry no persisted source; InvalidArgument if they
// are malformed.
absl::StatusOr<ResolvedLayer> ResolvedLayerFromLabels(const Labels& labels);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_LAYER_SOURCE_H_
