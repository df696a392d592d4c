// RemoteLayerManager's look ahead of a pull (remote_layer_manager.h): the other layers' indexes
// and readers opened at an image's first Prepare, and the walk of the program the image starts
// (its ELF start walk), begun as soon as every layer of the image has a reader.
#include <algorithm>
#include <future>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/background_guard.h"
#include "base/logging.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "server/remote/index_ranges.h"
#include "server/remote/remote_layer_manager.h"
#include "server/remote/start_hint.h"

namespace lazypull::remote {
namespace {

// Longest a start walk waits for another layer's preload before leaving the walk to the top
// layer's mount (a preload normally takes one round trip, the index's tail, and its parse).
constexpr std::chrono::seconds kEarlyStackWait{5};

std::string PreloadKey(const std::string& pinned_ref, const Digest& layer) {
  return pinned_ref + " " + layer.ToString();
}

// Whether the descriptor alone says the layer has a lazy index (preloading the others would
// only waste a tail fetch).
bool AnnotatedLazy(const oci::Descriptor& d) {
  static constexpr std::string_view kKeys[] = {format::kEstargzTocDigestAnnotation,
                                               format::kZstdChunkedManifestPositionKey,
                                               format::kLegacyZstdChunkedManifestPositionKey};
  for (std::string_view k : kKeys) {
    if (d.annotations.count(std::string(k)) > 0) return true;
  }
  return false;
}

}  // namespace

LayerReaderOptions RemoteLayerManager::ReaderOptions(const std::string& host) const {
  LayerReaderOptions reader_options = options_.mount.reader;
  reader_options.fetch_source = host;  // a stalled registry holds only its share of threads
  reader_options.file_start_observer = elf_prefetcher_;
  return reader_options;
}

void RemoteLayerManager::ContainerPrepared(const std::vector<int64_t>& parent_ids) {
  if (parent_ids.empty() || elf_prefetcher_ == nullptr) return;
  ResolvedLayer top;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = mounted_.find(parent_ids.front());
    if (it == mounted_.end() || it->second.reader.expired()) return;  // not lazy
    top = it->second.source;
  }
  PrefetchImageStart(top);
}

std::vector<std::shared_ptr<LayerReader>> RemoteLayerManager::EarlyImageStack(
    const ResolvedLayer& layer, const registry::ResolvedImage& image) {
  std::vector<std::shared_ptr<LayerReader>> stack;
  for (auto d = image.manifest.layers.rbegin(); d != image.manifest.layers.rend(); ++d) {
    std::shared_ptr<LayerReader> reader;
    std::optional<std::shared_future<absl::StatusOr<PreloadedLayer>>> preload;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, entry] : mounted_) {
        if (entry.source.layer.digest != d->digest || entry.source.image_ref != layer.image_ref) {
          continue;
        }
        if (std::shared_ptr<LayerReader> r = entry.reader.lock()) reader = std::move(r);
      }
      auto it = preloads_.find(PreloadKey(layer.image_ref, d->digest));
      if (reader == nullptr && it != preloads_.end()) preload = it->second.layer;
    }
    // Waits for the preload (its index is being opened: the tail fetch and the parse), on a
    // prefetcher thread, outside mu_; not for a stalled registry: that holds a prefetcher
    // thread, and the top layer's mount walks the program anyway.
    if (reader == nullptr && preload &&
        preload->wait_for(kEarlyStackWait) == std::future_status::ready) {
      const absl::StatusOr<PreloadedLayer>& preloaded = preload->get();
      if (preloaded.ok()) reader = preloaded->reader;
    }
    // A layer neither mounted nor preloaded (not lazy, its preload failed, or taken by its
    // Prepare that is mounting it right now): no early walk; the top layer's mount starts it.
    if (reader == nullptr) return {};
    stack.push_back(std::move(reader));
  }
  return stack;
}

void RemoteLayerManager::PrefetchImageStart(const ResolvedLayer& layer) {
  if (elf_prefetcher_ == nullptr) return;
  // Runs on a prefetcher thread: the config is one more registry round trip, off the Prepare.
  elf_prefetcher_->PrefetchStart(
      layer.layer.digest.ToString(), [this, layer]() -> startup::StartHint {
        absl::StatusOr<registry::Reference> ref = registry::ParseReference(layer.image_ref);
        if (!ref.ok()) return {};
        absl::StatusOr<registry::ResolvedImage> image = ResolveImage(*ref, /*allow_cached=*/true);
        if (!image.ok() || image->manifest.layers.empty()) return {};
        const oci::Descriptor& top = image->manifest.layers.back();
        // Below the top layer, the walk needs every layer's reader: the mounted ones and the
        // preloaded ones (made at the image's first Prepare), so that the program's bytes
        // move while containerd still prepares the other layers.
        const bool early = top.digest != layer.layer.digest;
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (start_hinted_.contains(top.digest.ToString())) return {};
          // Early, the top layer's reader comes from its preload (or its mount, done since).
          if (early && !preloads_.contains(PreloadKey(layer.image_ref, top.digest)) &&
              std::none_of(mounted_.begin(), mounted_.end(), [&](const auto& m) {
                return m.second.source.layer.digest == top.digest &&
                       m.second.source.image_ref == layer.image_ref;
              })) {
            return {};
          }
          // One early hint per image at a time (each lower layer's Prepare queues one).
          if (early && !early_hints_.insert(top.digest.ToString()).second) return {};
        }
        absl::Cleanup done = [&] {
          if (!early) return;
          std::lock_guard<std::mutex> lock(mu_);
          early_hints_.erase(top.digest.ToString());
        };
        // The config's round trip overlaps the wait for the other layers' indexes.
        absl::StatusOr<oci::ImageConfig> config = client_->FetchConfig(*ref, image->manifest);
        if (!config.ok()) {
          LogDebug("no start prefetch: image config",
                   {{"ref", layer.image_ref}, {"error", config.status().ToString()}});
          return {};
        }
        std::vector<std::shared_ptr<LayerReader>> stack;
        if (early) {
          stack = EarlyImageStack(layer, *image);
          if (stack.empty()) return {};
        }
        {
          // Once per top layer: at its pull (the first Prepare, or the top layer's) and again
          // when a container is prepared on it.
          std::lock_guard<std::mutex> lock(mu_);
          if (start_hinted_.size() >= kMaxStartHinted) start_hinted_.clear();
          if (!start_hinted_.insert(top.digest.ToString()).second) return {};
        }
        startup::StartHint hint = StartHintFromConfig(*config);
        hint.stack = std::move(stack);
        return hint;
      });
}

void RemoteLayerManager::PreloadImageLayers(const LayerSource& source, const ResolvedLayer& layer) {
  if (!options_.remote.preload_layers) return;
  absl::StatusOr<registry::Reference> ref = registry::ParseReference(layer.image_ref);
  if (!ref.ok()) return;
  absl::StatusOr<registry::ResolvedImage> image = ResolveImage(*ref, /*allow_cached=*/true);
  if (!image.ok()) return;
  // The layers to preload, each with its zTOC when a SOCI index serves it (a plain gzip
  // layer says nothing lazy itself; discovery answers are cached per manifest, so after this
  // Prepare's own Resolve this asks the registry nothing). Decided before mu_ is taken:
  // AttachZtoc takes it.
  registry::Reference pinned = *ref;
  pinned.tag.clear();
  pinned.digest = image->manifest_descriptor.digest;
  std::vector<ResolvedLayer> candidates;
  for (const oci::Descriptor& other : image->manifest.layers) {
    if (other.digest == layer.layer.digest) continue;
    if (!source.image_layers.empty() &&
        std::find(source.image_layers.begin(), source.image_layers.end(), other.digest) ==
            source.image_layers.end()) {
      continue;
    }
    ResolvedLayer candidate{.image_ref = layer.image_ref, .layer = other, .soci_note = ""};
    if (!AnnotatedLazy(other)) {
      AttachZtoc(pinned, *image, &candidate);
      absl::StatusOr<std::optional<oci::Descriptor>> ztoc =
          soci::ZtocFromAnnotations(candidate.layer.annotations);
      if (!ztoc.ok() || !ztoc->has_value()) continue;
    }
    candidates.push_back(std::move(candidate));
  }
  const auto now = std::chrono::steady_clock::now();
  std::vector<Preload> finished;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  // Indexes unused for preload_lifetime belong to an abandoned pull. Destroying a future of
  // std::async waits for its task, which a stalled registry can hold for minutes: only
  // finished ones are let go here, the others wait in retired_preloads_.
  for (auto it = preloads_.begin(); it != preloads_.end();) {
    if (now - it->second.started <= options_.remote.preload_lifetime) {
      ++it;
      continue;
    }
    retired_preloads_.push_back(std::move(it->second));
    it = preloads_.erase(it);
  }
  for (auto it = retired_preloads_.begin(); it != retired_preloads_.end();) {
    if (it->layer.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      ++it;
      continue;
    }
    finished.push_back(std::move(*it));
    it = retired_preloads_.erase(it);
  }
  for (ResolvedLayer& candidate : candidates) {
    const oci::Descriptor& other = candidate.layer;
    const std::string key = PreloadKey(layer.image_ref, other.digest);
    if (preloads_.count(key) > 0) continue;
    bool mounted = false;
    for (const auto& [id, entry] : mounted_) {
      mounted = mounted || (entry.source.layer.digest == other.digest &&
                            entry.source.image_ref == layer.image_ref);
    }
    if (mounted) continue;
    std::shared_future<absl::StatusOr<PreloadedLayer>> future =
        std::async(
            std::launch::async,
            [this, pinned, candidate = std::move(candidate)]() -> absl::StatusOr<PreloadedLayer> {
              const oci::Descriptor& other = candidate.layer;
              return RunGuarded(
                  "layer index preload", {{"layer", other.digest.ToString()}},
                  [&]() -> absl::StatusOr<PreloadedLayer> {
                    std::shared_ptr<BlobReader> blob = client_->OpenBlob(pinned, other);
                    PreloadedLayer preloaded;
                    if (auto soci = OpenSociIndex(candidate)) {
                      if (!soci->ok()) return soci->status();
                      preloaded.index = std::move(**soci);
                    } else {
                      absl::StatusOr<format::LayerIndex> index =
                          OpenLayerIndexKeepingBytes(blob, other, IndexBytesDir());
                      if (!index.ok()) return index.status();
                      preloaded.index =
                          std::make_shared<const format::LayerIndex>(std::move(*index));
                    }
                    // The reader its mount adopts; a start walk may fetch through it
                    // before (EarlyImageStack). No reader: the mount makes one.
                    absl::StatusOr<ChunkCache*> cache = Cache();
                    if (!cache.ok()) return preloaded;
                    absl::StatusOr<std::unique_ptr<LayerReader>> reader =
                        LayerReader::Create(other.digest.ToString(), preloaded.index, blob, *cache,
                                            ReaderOptions(pinned.host));
                    if (reader.ok()) preloaded.reader = std::move(*reader);
                    return preloaded;
                  });
            })
            .share();
    preloads_[key] = Preload{.layer = std::move(future), .started = now, .taken = false};
  }
}

void RemoteLayerManager::ForgetPreloadLocked(const ResolvedLayer& layer) {
  auto it = preloads_.find(PreloadKey(layer.image_ref, layer.layer.digest));
  if (it == preloads_.end() || !it->second.taken) return;
  // Its task is done (the mount waited for it): destroying it here does not block.
  preloads_.erase(it);
}

absl::StatusOr<RemoteLayerManager::PreloadedLayer> RemoteLayerManager::OpenLayerFor(
    const ResolvedLayer& layer, const std::shared_ptr<BlobReader>& blob) {
  std::optional<std::shared_future<absl::StatusOr<PreloadedLayer>>> preload;
  {
    // Taken, but kept until the mount is recorded (ForgetPreloadLocked): a start walk waiting
    // for the image's readers (EarlyImageStack) finds this one meanwhile.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = preloads_.find(PreloadKey(layer.image_ref, layer.layer.digest));
    if (it != preloads_.end() && !it->second.taken) {
      it->second.taken = true;
      preload = it->second.layer;
    }
  }
  if (preload) {
    const absl::StatusOr<PreloadedLayer>& preloaded = preload->get();
    if (preloaded.ok()) return *preloaded;
    LogInfo("preloaded layer index failed; opening it again",
            {{"layer", layer.layer.digest.ToString()}, {"error", preloaded.status().ToString()}});
  }
  if (auto soci = OpenSociIndex(layer)) {
    if (!soci->ok()) return soci->status();
    return PreloadedLayer{.index = std::move(**soci), .reader = nullptr};
  }
  absl::StatusOr<format::LayerIndex> index =
      OpenLayerIndexKeepingBytes(blob, layer.layer, IndexBytesDir());
  if (!index.ok() && !layer.soci_note.empty()) {
    return absl::Status(index.status().code(), absl::StrCat(index.status().message(),
                                                            "; no SOCI zTOC: ", layer.soci_note));
  }
  if (!index.ok()) return index.status();
  return PreloadedLayer{.index = std::make_shared<const format::LayerIndex>(std::move(*index)),
                        .reader = nullptr};
}

}  // namespace lazypull::remote
