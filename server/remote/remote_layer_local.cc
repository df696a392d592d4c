// RemoteLayerManager's side of local layer copies (EROFS graduation, mount/erofs): what the
// backend needs to build a verified copy of a layer (its origin), and mounts of layers that
// are local already. Kept apart from the lazy-mount path in remote_layer_manager.cc.
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/registry/reference.h"
#include "server/remote/remote_layer_manager.h"

namespace lazypull::remote {
namespace {

// The format a layer's media type implies (for status when no index was opened).
// The lazy format a graduated layer was served in, from its persisted descriptor.
std::string FormatOfLayer(const oci::Descriptor& layer) {
  if (layer.annotations.count(soci::kZtocDigestAnnotation) > 0) return "soci";
  return layer.media_type.find("zstd") != std::string::npos ? "zstd:chunked" : "estargz";
}

}  // namespace

mount::LayerOrigin RemoteLayerManager::OriginOf(const ResolvedLayer& layer,
                                                std::shared_ptr<BlobReader> blob) {
  mount::LayerOrigin origin;
  // Called from the backend's graduation thread, so it must not throw past it (the backend
  // guards it too).
  origin.blob = std::move(blob);
  origin.diff_id = [this, layer]() -> absl::StatusOr<Digest> {
    absl::StatusOr<registry::Reference> ref = registry::ParseReference(layer.image_ref);
    if (!ref.ok()) return ref.status();
    absl::StatusOr<registry::ResolvedImage> image = ResolveImage(*ref, /*allow_cached=*/true);
    if (!image.ok()) return image.status();
    absl::StatusOr<oci::ImageConfig> config = client_->FetchConfig(*ref, image->manifest);
    if (!config.ok()) return config.status();
    const auto& layers = image->manifest.layers;
    for (size_t i = 0; i < layers.size() && i < config->diff_ids().size(); ++i) {
      if (layers[i].digest == layer.layer.digest) return config->diff_ids()[i];
    }
    return absl::NotFoundError(absl::StrCat("no diff_id for layer ", layer.layer.digest.ToString(),
                                            " in the image config of ", layer.image_ref));
  };
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    origin.cache = cache_.get();
  }
  return origin;
}

absl::Status RemoteLayerManager::MountLocalLayer(int64_t snapshot_id, const ResolvedLayer& layer,
                                                 const std::vector<int64_t>& parent_ids,
                                                 const std::string& fs_dir,
                                                 const std::string& backend) {
  const std::string layer_id = layer.layer.digest.ToString();
  absl::StatusOr<std::unique_ptr<mount::MountedLayer>> mounted =
      backend_->MountLocal(layer_id, fs_dir, backend, static_cast<uint64_t>(snapshot_id));
  if (!mounted.ok()) return mounted.status();
  std::unique_ptr<mount::MountedLayer> replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    MountedEntry& entry = mounted_[snapshot_id];
    replaced = std::move(entry.mounted);
    entry = MountedEntry{.source = layer,
                         .format = FormatOfLayer(layer.layer),
                         .mounted = std::move(*mounted),
                         .parent_ids = parent_ids,
                         .reader = {}};  // a local copy has no lazy reader
    unavailable_.erase(snapshot_id);
  }
  if (replaced != nullptr) replaced->Unmount().IgnoreError();
  LogInfo("remote layer mounted from its local copy",
          {{"snapshot_id", snapshot_id}, {"layer", layer_id}, {"target", fs_dir}});
  status_cv_.notify_all();
  return absl::OkStatus();
}

}  // namespace lazypull::remote
