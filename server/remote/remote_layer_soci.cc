// RemoteLayerManager: SOCI layers — attaching the zTOC that discovery names to a resolved gzip
// layer, and opening a layer's index through it.
#include <chrono>
#include <string>
#include <utility>

#include "base/logging.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"
#include "server/remote/remote_layer_manager.h"

namespace lazypull::remote {

std::string RemoteLayerManager::AttachZtoc(const registry::Reference& pinned,
                                           const registry::ResolvedImage& image,
                                           ResolvedLayer* resolved) {
  const Digest& manifest_digest = image.manifest_descriptor.digest;
  oci::Descriptor& layer = resolved->layer;
  if (!options_.soci_discovery ||
      oci::LayerCompressionOf(layer.media_type) != oci::LayerCompression::kGzip ||
      layer.annotations.count(std::string(format::kEstargzTocDigestAnnotation)) > 0) {
    return "";
  }
  const auto now = std::chrono::steady_clock::now();
  absl::StatusOr<std::map<Digest, oci::Descriptor>> ztocs = std::map<Digest, oci::Descriptor>{};
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ztocs_.find(manifest_digest);
    if (it != ztocs_.end() && now - it->second.fetched < options_.remote.manifest_cache) {
      ztocs = it->second.ztocs;
      cached = true;
    }
  }
  if (!cached) {
    // The manifest in hand (verified by its digest when it was resolved): no round trip.
    ztocs = options_.soci_discovery->Find(*client_, pinned, manifest_digest, image.manifest);
    std::lock_guard<std::mutex> lock(mu_);
    if (ztocs_.size() > 256) ztocs_.clear();  // bound; answers are cheap to ask again
    ztocs_[manifest_digest] = CachedZtocs{ztocs, now};
  }
  if (!ztocs.ok()) {
    return fmt::format("SOCI index discovery failed: {}", ztocs.status().ToString());
  }
  auto it = ztocs->find(layer.digest);
  if (it == ztocs->end()) {
    if (!ztocs->empty()) return "the SOCI index has no zTOC for it";
    return options_.soci_v1 ? "the image has no SOCI index"
                            : "the image has no SOCI index (v2; v1 indexes, found through "
                              "referrers, are not looked for: [soci] v1 = false)";
  }
  soci::AddZtocAnnotations(it->second, layer.annotations);
  return "";
}

std::optional<absl::StatusOr<std::shared_ptr<const format::LayerIndex>>>
RemoteLayerManager::OpenSociIndex(const ResolvedLayer& layer) {
  absl::StatusOr<std::optional<oci::Descriptor>> ztoc =
      soci::ZtocFromAnnotations(layer.layer.annotations);
  if (!ztoc.ok()) return ztoc.status();
  if (!ztoc->has_value()) return std::nullopt;
  absl::StatusOr<registry::Reference> ref = registry::ParseReference(layer.image_ref);
  if (!ref.ok()) return ref.status();
  // lazypull's fine index (fine_index.h), when `index create` wrote one: ~128 KiB spans.
  // Unusable (missing, corrupt, refused): one warning, then the zTOC as for any soci index.
  absl::StatusOr<std::optional<soci::FineRef>> fine =
      soci::FineFromAnnotations(layer.layer.annotations);
  if (fine.ok() && fine->has_value()) {
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<BlobReader> fine_blob = client_->OpenBlob(*ref, (*fine)->fine);
    std::shared_ptr<BlobReader> windows = client_->OpenBlob(*ref, (*fine)->windows);
    absl::StatusOr<format::LayerIndex> index = soci::OpenFineSociLayerIndex(
        *fine_blob, std::move(windows), **fine, static_cast<uint64_t>(layer.layer.size));
    if (index.ok()) {
      LogInfo("SOCI layer opened through its fine index",
              {{"layer", layer.layer.digest.ToString()},
               {"fine_index", (*fine)->fine.digest.ToString()},
               {"chunks", std::to_string(index->chunk_count())},
               {"ms",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count()}});
      return std::make_shared<const format::LayerIndex>(std::move(*index));
    }
    fine = index.status();
  }
  if (!fine.ok()) {
    LogWarn("SOCI fine index unusable; serving the layer through its zTOC",
            {{"layer", layer.layer.digest.ToString()}, {"error", fine.status().ToString()}});
  }
  // The zTOC is a blob of the image's repository (a layer of the SOCI index manifest).
  std::unique_ptr<BlobReader> blob = client_->OpenBlob(*ref, **ztoc);
  absl::StatusOr<format::LayerIndex> index =
      soci::OpenSociLayerIndex(*blob, **ztoc, static_cast<uint64_t>(layer.layer.size));
  if (!index.ok()) {
    return absl::Status(index.status().code(),
                        fmt::format("SOCI layer: {}", std::string(index.status().message())));
  }
  return std::make_shared<const format::LayerIndex>(std::move(*index));
}

}  // namespace lazypull::remote
