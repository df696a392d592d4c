#include "server/remote/remote_layer_manager.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/atomic_file.h"
#include "base/background_guard.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/format_detector.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "mount/fuse/holder_client.h"
#include "mount/fuse/passthrough_dirs.h"
#include "mount/fuse/stale_mounts.h"
#include "server/remote/index_ranges.h"
#include "server/remote/remote_metrics.h"
#include "server/remote/start_hint.h"

namespace lazypull::remote {
namespace {

const toml::table* Section(const toml::table& doc, std::string_view name) {
  const toml::node* node = doc.get(name);
  return node == nullptr ? nullptr : node->as_table();
}

}  // namespace

absl::StatusOr<RemoteLayerManager::Options> RemoteLayerManager::OptionsFromToml(
    const std::string& root, const toml::table& doc) {
  Options options;
  options.root = root;
  if (const toml::table* t = Section(doc, "remote")) {
    absl::StatusOr<RemoteConfig> c = ParseRemoteConfig(*t);
    if (!c.ok()) return c.status();
    options.remote = *c;
  }
  if (const toml::table* t = Section(doc, "registry")) {
    absl::StatusOr<registry::RegistryConfig> c = registry::ParseRegistryConfig(*t);
    if (!c.ok()) return c.status();
    options.registry = *c;
  }
  if (const toml::table* t = Section(doc, "cache")) {
    absl::StatusOr<CacheConfig> c = ParseCacheConfig(*t);
    if (!c.ok()) return c.status();
    options.cache = *c;
  }
  if (const toml::table* t = Section(doc, "mount")) {
    absl::StatusOr<mount::MountConfig> c = mount::ParseMountConfig(*t);
    if (!c.ok()) return c.status();
    options.mount = *c;
  }
  return options;
}

RemoteLayerManager::RemoteLayerManager(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<RemoteLayerManager>> RemoteLayerManager::Create(Options options) {
  if (options.root.empty()) return absl::InvalidArgumentError("remote layers: root is empty");
  if (options.cache.dir.empty()) options.cache.dir = options.root + "/cache";
  std::unique_ptr<RemoteLayerManager> m(new RemoteLayerManager(std::move(options)));
  Options& o = m->options_;
  if (o.metrics != nullptr) {  // issue 11
    o.registry.observer = o.metrics->registry_observer();
    o.mount.fuse.op_observer = o.metrics->fs_op_observer();
  }
  std::unique_ptr<registry::HttpTransport> transport =
      o.transport != nullptr ? std::move(o.transport) : registry::NewCurlTransport();
  m->client_ = std::make_unique<registry::RegistryClient>(o.registry, std::move(transport));
  if (o.mount.erofs.dir.empty()) o.mount.erofs.dir = o.root + "/erofs";
  // Issue 20: with a FUSE holder, FUSE mounts outlive this daemon and the next one adopts them.
  if (o.mount.fuse.holder_socket.empty()) o.mount.fuse.holder_socket = o.root + "/fuse-holder.sock";
  if (o.mount.fuse.passthrough_dir.empty()) {
    o.mount.fuse.passthrough_dir = o.root + "/fuse-passthrough";
  }
  absl::StatusOr<std::unique_ptr<mount::FuseHolderClient>> holder =
      mount::FuseHolderClient::Connect(o.mount.fuse.holder_socket);
  std::set<std::string> held;
  if (holder.ok()) {
    o.mount.fuse.holder = std::move(*holder);
    absl::StatusOr<std::vector<std::string>> keys = o.mount.fuse.holder->List();
    if (keys.ok()) held.insert(keys->begin(), keys->end());
    LogInfo("FUSE holder connected: FUSE mounts survive daemon restarts",
            {{"socket", o.mount.fuse.holder_socket}, {"held", held.size()}});
  } else {
    LogInfo("no FUSE holder: FUSE mounts end with this daemon",
            {{"socket", o.mount.fuse.holder_socket}, {"error", holder.status().ToString()}});
  }
  absl::StatusOr<std::unique_ptr<mount::LayerMountBackend>> backend =
      mount::NewLayerMountBackend(o.mount);
  if (!backend.ok()) return backend.status();
  m->backend_ = std::move(*backend);
  // One pool and one background scheduler for every layer: containers' reads are served
  // before background fetches, which share one node-wide budget.
  const size_t background = o.mount.reader.background_policy.max_in_flight;
  m->executor_ =
      std::make_shared<FetchExecutor>(o.mount.reader.foreground_threads + background, background);
  o.mount.reader.executor = m->executor_;
  m->scheduler_ = std::make_shared<BackgroundScheduler>(o.mount.reader.background_policy);
  o.mount.reader.scheduler = m->scheduler_;
  if (o.mount.elf_prefetch) {
    startup::ElfPrefetchOptions elf_options;
    elf_options.background = m->scheduler_;
    m->elf_prefetcher_ = std::make_shared<startup::ElfPrefetcher>(
        std::move(elf_options),
        [raw = m.get()](const std::string& layer_id) { return raw->LayerStack(layer_id); });
  }

  // A crashed daemon leaves its FUSE mounts behind; every access to them fails with ENOTCONN.
  absl::StatusOr<std::vector<std::string>> detached =
      mount::DetachStaleFuseMounts(o.root + "/snapshots", held);
  if (!detached.ok()) {
    LogWarn("cannot detach stale FUSE mounts", {{"error", detached.status().ToString()}});
  } else if (!detached->empty()) {
    LogInfo("detached stale FUSE mounts", {{"count", detached->size()}});
  }
  // Their passthrough state too (copies count against nobody's budget once their mount is
  // gone); the mounts the holder keeps are adopted with theirs.
  mount::SweepPassthroughDirs(o.mount.fuse.passthrough_dir, held);
  m->status_thread_ = std::thread([raw = m.get()] { raw->StatusLoop(); });
  if (o.metrics != nullptr) {
    m->metrics_source_ = o.metrics->AddSource(
        [raw = m.get()](metrics::FamilySet& out) { raw->CollectMetrics(out); });
  }
  return m;
}

RemoteLayerManager::~RemoteLayerManager() {
  metrics_source_.Reset();
  // With a holder, the mounts stay for the next daemon (a graceful upgrade), handed over first:
  // readers wait from here until the next daemon adopts them, so not behind the status
  // writer's last write (an fsync: hundreds of ms on a busy disk). Without one, unmount.
  const bool hand_over = options_.mount.fuse.holder != nullptr;
  if (hand_over) HandOverAll();
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    stopping_ = true;
  }
  status_cv_.notify_all();
  if (status_thread_.joinable()) status_thread_.join();
  if (!hand_over) UnmountAll();
  // Its walks hold readers of the layers just unmounted: Stop ends their waits.
  if (elf_prefetcher_ != nullptr) elf_prefetcher_->Stop();
  WriteStatusFile().IgnoreError();
  // Its prefetches use client_, destroyed before options_: waited for here.
  options_.soci_discovery.reset();
}

std::vector<std::shared_ptr<LayerReader>> RemoteLayerManager::LayerStack(
    const std::string& layer_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  // The newest snapshot of the layer, then the newest chain that has it (the image being
  // started most likely: a shared base layer belongs to every image above it).
  int64_t self = -1;
  for (const auto& [id, entry] : mounted_) {
    if (entry.source.layer.digest.ToString() == layer_id && !entry.reader.expired()) self = id;
  }
  if (self < 0) return {};
  int64_t top = self;
  for (const auto& [id, entry] : mounted_) {
    if (id > top && std::find(entry.parent_ids.begin(), entry.parent_ids.end(), self) !=
                        entry.parent_ids.end()) {
      top = id;
    }
  }
  const MountedEntry& top_entry = mounted_.at(top);
  std::vector<int64_t> chain = {top};
  chain.insert(chain.end(), top_entry.parent_ids.begin(), top_entry.parent_ids.end());
  std::vector<std::shared_ptr<LayerReader>> stack;
  for (int64_t id : chain) {
    auto it = mounted_.find(id);
    if (it == mounted_.end()) continue;
    if (std::shared_ptr<LayerReader> r = it->second.reader.lock()) stack.push_back(std::move(r));
  }
  return stack;
}

void RemoteLayerManager::UnmountAll() {
  std::map<int64_t, MountedEntry> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries.swap(mounted_);
  }
  for (auto& [id, entry] : entries) {
    absl::Status s = entry.mounted->Unmount();
    if (!s.ok()) {
      LogWarn("cannot unmount remote layer", {{"snapshot_id", id},
                                              {"layer", entry.source.layer.digest.ToString()},
                                              {"error", s.ToString()}});
    }
  }
  if (!entries.empty()) LogInfo("remote layers unmounted", {{"count", entries.size()}});
}

void RemoteLayerManager::HandOverAll() {
  std::map<int64_t, MountedEntry> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries.swap(mounted_);
  }
  // First what the layers share (the EROFS blob file system): its files' reads then wait for
  // the successor, and no layer's handover below can cut one off.
  backend_->HandOverShared();
  for (auto& [id, entry] : entries) {
    if (absl::Status s = entry.mounted->HandOver(); !s.ok()) {
      LogWarn("cannot hand over remote layer", {{"snapshot_id", id},
                                                {"layer", entry.source.layer.digest.ToString()},
                                                {"error", s.ToString()}});
    }
  }
  if (!entries.empty()) LogInfo("remote layers handed over", {{"count", entries.size()}});
}

void RemoteLayerManager::ReleaseUnadoptedHeld() {
  // What the backend serves besides the layers' targets (the EROFS blob file system).
  std::set<std::string> in_use = backend_->FinishRestore();
  mount::FuseHolderClient* holder = options_.mount.fuse.holder.get();
  if (holder == nullptr) return;
  absl::StatusOr<std::vector<std::string>> keys = holder->List();
  if (!keys.ok()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, entry] : mounted_) in_use.insert(entry.mounted->target());
  }
  for (const std::string& key : *keys) {
    if (in_use.count(key) > 0) continue;
    // A mount of a previous daemon that no snapshot here uses (or that could not be
    // restored): nobody will serve it.
    if (::umount2(key.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      LogWarn("cannot unmount a FUSE mount left in the holder",
              {{"target", key}, {"error", strerror(errno)}});
    }
    holder->Forget(key).IgnoreError();
    LogInfo("released a FUSE mount no snapshot uses", {{"target", key}});
  }
}

absl::StatusOr<registry::ResolvedImage> RemoteLayerManager::ResolveImage(
    const registry::Reference& ref, bool allow_cached) {
  const std::string key = ref.ToString();
  const auto now = std::chrono::steady_clock::now();
  if (allow_cached) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = images_.find(key);
    // A digest reference never changes; a tag is re-resolved after manifest_cache.
    if (it != images_.end() &&
        (!ref.digest.empty() || now - it->second.fetched < options_.remote.manifest_cache)) {
      return it->second.image;
    }
  }
  // The image index's entry for the manifest names a v2 SOCI index: discovery starts fetching
  // it now, in parallel with the manifest, rather than one round trip after it.
  std::function<void(const oci::Descriptor&)> on_index_entry;
  if (options_.soci_discovery != nullptr) {
    on_index_entry = [this, &ref](const oci::Descriptor& entry) {
      options_.soci_discovery->SawIndexEntry(*client_, ref, entry);
    };
  }
  absl::StatusOr<registry::ResolvedImage> image =
      client_->Resolve(ref, std::nullopt, on_index_entry);
  if (!image.ok()) return image.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (images_.size() > 256) images_.clear();  // bound; entries are cheap to refetch
  images_[key] = CachedImage{*image, now};
  return image;
}

absl::StatusOr<ResolvedLayer> RemoteLayerManager::Resolve(const LayerSource& source) {
  absl::StatusOr<registry::Reference> ref = registry::ParseReference(source.image_ref);
  if (!ref.ok()) return ref.status();
  if (source.manifest_digest.has_value()) ref->digest = *source.manifest_digest;
  for (bool allow_cached : {true, false}) {
    absl::StatusOr<registry::ResolvedImage> image = ResolveImage(*ref, allow_cached);
    if (!image.ok()) return image.status();
    for (const oci::Descriptor& layer : image->manifest.layers) {
      if (layer.digest != source.layer_digest) continue;
      ResolvedLayer resolved;
      registry::Reference pinned = *ref;
      pinned.tag.clear();
      pinned.digest = image->manifest_descriptor.digest;
      resolved.image_ref = pinned.ToString();
      resolved.layer = layer;
      // The manifest is authoritative; labels only fill what it lacks.
      for (const auto& [k, v] : source.label_annotations) resolved.layer.annotations.emplace(k, v);
      resolved.soci_note = AttachZtoc(pinned, *image, &resolved);
      return resolved;
    }
    if (!ref->digest.empty()) break;  // a digest's manifest cannot change
  }
  return absl::NotFoundError(absl::StrCat("layer ", source.layer_digest.ToString(),
                                          " is not in the manifest of ", source.image_ref));
}

absl::StatusOr<ChunkCache*> RemoteLayerManager::Cache() {
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_ == nullptr) {
    absl::StatusOr<std::unique_ptr<ChunkCache>> cache = ChunkCache::Open(options_.cache);
    if (!cache.ok()) return cache.status();
    cache_ = std::move(*cache);
    cache_ptr_ = cache_.get();
    // Graduated copies count against the same budget as the chunks.
    cache_->SetExternalBytes(backend_->LocalBytes());
  }
  return cache_.get();
}

namespace {

std::string BackendLabel(const Labels& labels) {
  auto it = labels.find(kBackendLabel);
  return it == labels.end() ? std::string() : it->second;
}

}  // namespace

absl::Status RemoteLayerManager::MountLayer(int64_t snapshot_id, const ResolvedLayer& layer,
                                            const std::vector<int64_t>& parent_ids,
                                            const std::string& fs_dir, const std::string& backend) {
  status_active_ = true;
  // A layer already local on this node needs neither its index nor the registry.
  absl::Status local = MountLocalLayer(snapshot_id, layer, parent_ids, fs_dir, backend);
  if (local.ok() || local.code() != absl::StatusCode::kNotFound) return local;
  // The first open of the chunk cache (it scans its directory: tens of ms) overlaps the
  // index's registry round trips instead of coming before them. Waited for on every path.
  std::future<absl::StatusOr<ChunkCache*>> opening;
  if (cache_ptr_.load() == nullptr) {
    try {
      opening = std::async(std::launch::async, [this] { return Cache(); });
    } catch (const std::system_error&) {
      // No thread: opened below, in line.
    }
  }
  absl::StatusOr<registry::Reference> ref = registry::ParseReference(layer.image_ref);
  if (!ref.ok()) return ref.status();
  std::shared_ptr<BlobReader> blob = client_->OpenBlob(*ref, layer.layer);
  absl::StatusOr<PreloadedLayer> opened = OpenLayerFor(layer, blob);
  if (!opened.ok()) return opened.status();
  absl::StatusOr<ChunkCache*> cache = opening.valid() ? opening.get() : Cache();
  if (!cache.ok()) return cache.status();
  const std::string format(format::LayerFormatName(opened->index->format()));
  const std::string layer_id = layer.layer.digest.ToString();
  std::shared_ptr<LayerReader> reader = std::move(opened->reader);
  if (reader == nullptr) {
    absl::StatusOr<std::unique_ptr<LayerReader>> created =
        LayerReader::Create(layer_id, opened->index, blob, *cache, ReaderOptions(ref->host));
    if (!created.ok()) return created.status();
    reader = std::move(*created);
  }
  absl::StatusOr<std::unique_ptr<mount::MountedLayer>> mounted =
      backend_->Mount({.layer_id = layer_id,
                       .reader = reader,
                       .target_dir = fs_dir,
                       .backend = backend,
                       .origin = OriginOf(layer, blob),
                       .mount_id = static_cast<uint64_t>(snapshot_id)});
  if (!mounted.ok()) return mounted.status();
  (*mounted)->StartBackground();
  std::unique_ptr<mount::MountedLayer> replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    MountedEntry& entry = mounted_[snapshot_id];
    replaced = std::move(entry.mounted);
    entry = MountedEntry{.source = layer,
                         .format = format,
                         .mounted = std::move(*mounted),
                         .parent_ids = parent_ids,
                         .reader = reader};
    ForgetPreloadLocked(layer);
    unavailable_.erase(snapshot_id);
  }
  if (replaced != nullptr) replaced->Unmount().IgnoreError();
  LogInfo("remote layer mounted", {{"snapshot_id", snapshot_id},
                                   {"layer", layer_id},
                                   {"ref", layer.image_ref},
                                   {"format", format},
                                   {"target", fs_dir}});
  status_cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<Labels> RemoteLayerManager::PrepareRemoteLayer(const RemoteLayerRequest& request,
                                                              const std::string& fs_dir) {
  if (!options_.remote.enabled) return absl::UnimplementedError("remote layers are disabled");
  absl::StatusOr<LayerSource> source = LayerSourceFromLabels(request.labels);
  if (!source.ok()) return source.status();
  // The steps of a Prepare on the pull's path (the cold start benchmark's traces).
  const auto start = std::chrono::steady_clock::now();
  auto ms = [&start] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
  };
  absl::StatusOr<ResolvedLayer> layer = Resolve(*source);
  absl::Status s = layer.status();
  LogDebug("remote layer resolved",
           {{"layer", source->layer_digest.ToString()}, {"ok", s.ok()}, {"ms", ms()}});
  if (s.ok()) PreloadImageLayers(*source, *layer);
  if (s.ok()) {
    s = MountLayer(request.snapshot_id, *layer, request.parent_ids, fs_dir,
                   BackendLabel(request.labels));
    LogDebug("remote layer prepared",
             {{"layer", source->layer_digest.ToString()}, {"ok", s.ok()}, {"ms", ms()}});
  }
  if (!s.ok()) {
    LogInfo("layer is not lazily mountable; containerd will pull it",
            {{"key", request.key},
             {"ref", source->image_ref},
             {"layer", source->layer_digest.ToString()},
             {"reason", s.ToString()}});
    return s;
  }
  // With background fetch on, the pull is followed by a fetch of every layer anyway: the
  // program the image starts goes first, while containerd still pulls and creates the
  // container (else it waits for the container's rootfs: ContainerPrepared).
  if (options_.mount.reader.background_fetch) PrefetchImageStart(*layer);
  Labels labels = ResolvedLayerToLabels(*layer);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = mounted_.find(request.snapshot_id);
    if (it != mounted_.end() && !it->second.format.empty()) {
      labels[kFormatLabel] = it->second.format;
    }
  }
  return labels;
}

absl::Status RemoteLayerManager::RestoreRemoteLayer(int64_t snapshot_id, const SnapshotInfo& info,
                                                    const std::vector<int64_t>& parent_ids,
                                                    const std::string& fs_dir) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_restores_.push_back(PendingRestore{.snapshot_id = snapshot_id,
                                             .name = info.name,
                                             .labels = info.labels,
                                             .parent_ids = parent_ids,
                                             .fs_dir = fs_dir});
  return absl::OkStatus();
}

void RemoteLayerManager::RestoreOne(const PendingRestore& pending) {
  absl::StatusOr<ResolvedLayer> layer = ResolvedLayerFromLabels(pending.labels);
  absl::Status s = layer.status();
  if (s.ok()) {
    s = MountLayer(pending.snapshot_id, *layer, pending.parent_ids, pending.fs_dir,
                   BackendLabel(pending.labels));
  }
  if (s.ok()) return;
  LogWarn(
      "cannot re-mount remote layer; its snapshots are unavailable",
      {{"snapshot", pending.name}, {"snapshot_id", pending.snapshot_id}, {"error", s.ToString()}});
  std::lock_guard<std::mutex> lock(mu_);
  unavailable_[pending.snapshot_id] =
      Unavailable{.source = layer.ok() ? *layer : ResolvedLayer{}, .error = s.ToString()};
}

absl::Status RemoteLayerManager::FinishRestore() {
  std::vector<PendingRestore> pending;
  std::set<std::string> used_layers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending.swap(pending_restores_);
    for (const auto& [id, entry] : mounted_) {
      used_layers.insert(entry.source.layer.digest.ToString());
    }
  }
  // Local copies (and leftovers) of layers no snapshot in the metastore uses any more: their
  // snapshots were removed while no daemon ran, or a crash came between a release and the
  // delete.
  for (const PendingRestore& p : pending) {
    absl::StatusOr<ResolvedLayer> layer = ResolvedLayerFromLabels(p.labels);
    if (layer.ok()) used_layers.insert(layer->layer.digest.ToString());
  }
  backend_->DropLocalExcept(used_layers);
  DropIndexBytesExcept(IndexBytesDir(), used_layers);
  UpdateCacheBudget();
  if (pending.empty()) {
    ReleaseUnadoptedHeld();
    return absl::OkStatus();
  }
  const absl::Time start = absl::Now();
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  size_t n = std::min(pending.size(), std::max<size_t>(1, options_.remote.restore_concurrency));
  for (size_t i = 0; i < n; ++i) {
    workers.emplace_back([&] {
      for (size_t j = next++; j < pending.size(); j = next++) {
        absl::Status s = RunGuarded("layer restore", {{"snapshot_id", pending[j].snapshot_id}},
                                    [&]() -> absl::Status {
                                      RestoreOne(pending[j]);
                                      return absl::OkStatus();
                                    });
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          unavailable_[pending[j].snapshot_id] = Unavailable{.source = {}, .error = s.ToString()};
        }
      }
    });
  }
  for (std::thread& t : workers) t.join();
  ReleaseUnadoptedHeld();
  size_t failed;
  std::string first_error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed = unavailable_.size();
    if (!unavailable_.empty()) first_error = unavailable_.begin()->second.error;
  }
  LogInfo("remote layers restored", {{"restored", pending.size() - failed},
                                     {"failed", failed},
                                     {"seconds", absl::ToDoubleSeconds(absl::Now() - start)}});
  WriteStatusFile().IgnoreError();
  if (options_.metrics != nullptr) {
    options_.metrics->SetRestoreResult(pending.size() - failed, failed);
  }
  if (failed > 0 && options_.remote.fail_on_restore_error) {
    return absl::UnavailableError(absl::StrCat(failed, " remote layer(s) cannot be re-mounted ",
                                               "(fail_on_restore_error); first: ", first_error));
  }
  return absl::OkStatus();
}

absl::Status RemoteLayerManager::CheckLayerAvailable(int64_t snapshot_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = unavailable_.find(snapshot_id);
  if (it == unavailable_.end()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("remote layer ", it->second.source.layer.digest.ToString(), " of snapshot id ",
                   snapshot_id, " is not mounted: ", it->second.error));
}

absl::Status RemoteLayerManager::ReleaseRemoteLayer(int64_t snapshot_id,
                                                    const std::string& fs_dir) {
  std::unique_ptr<mount::MountedLayer> mounted;
  bool last_of_layer = false;
  Digest digest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A snapshot that failed to re-mount after a restart is not in mounted_, but its layer
    // may still have a local copy: it is released all the same.
    if (auto u = unavailable_.find(snapshot_id); u != unavailable_.end()) {
      digest = u->second.source.layer.digest;
      unavailable_.erase(u);
    }
    if (auto it = mounted_.find(snapshot_id); it != mounted_.end()) {
      mounted = std::move(it->second.mounted);
      const mount::LayerMountStatus st = mounted->Status();
      AddRetiredStats(st.reader, retired_);
      retired_handover_.adoptions += st.adopted ? 1 : 0;
      retired_handover_.resent_requests += st.resent_requests;
      digest = it->second.source.layer.digest;
      mounted_.erase(it);
    }
    if (digest.empty()) return absl::OkStatus();
    // The layer's local copy (EROFS graduation) goes with its last snapshot.
    last_of_layer =
        std::none_of(mounted_.begin(), mounted_.end(),
                     [&](const auto& e) { return e.second.source.layer.digest == digest; }) &&
        std::none_of(unavailable_.begin(), unavailable_.end(),
                     [&](const auto& e) { return e.second.source.layer.digest == digest; });
  }
  absl::Status s = mounted != nullptr ? mounted->Unmount() : absl::OkStatus();
  if (last_of_layer) {
    backend_->DropLocal(digest.ToString());
    UpdateCacheBudget();
  }
  status_cv_.notify_all();
  if (!s.ok()) return s;
  LogInfo("remote layer unmounted", {{"snapshot_id", snapshot_id}, {"target", fs_dir}});
  return absl::OkStatus();
}

void RemoteLayerManager::UpdateCacheBudget() {
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_ != nullptr) cache_->SetExternalBytes(backend_->LocalBytes());
}

size_t RemoteLayerManager::mounted_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mounted_.size();
}

nlohmann::json RemoteLayerManager::StatusJson() const {
  nlohmann::json out = nlohmann::json::object();
  out["pid"] = ::getpid();
  out["updated"] = absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone());
  nlohmann::json layers = nlohmann::json::array();
  nlohmann::json unavailable = nlohmann::json::array();
  // Everything lazypull keeps on disk for lazy layers, against the cache budget.
  nlohmann::json disk = {{"graduated_bytes", backend_->LocalBytes()},
                         {"max_bytes", options_.cache.max_bytes}};
  if (ChunkCache* cache = cache_ptr_.load(); cache != nullptr) {
    disk["cache_bytes"] = cache->stats().bytes_stored;
  }
  out["disk"] = std::move(disk);  // before mu_: it walks the copies
  out["mount"] = backend_->Describe();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, entry] : mounted_) {
    nlohmann::json j = entry.mounted->Status().ToJson();
    j["snapshot_id"] = id;
    j["ref"] = entry.source.image_ref;
    j["digest"] = entry.source.layer.digest.ToString();
    j["format"] = entry.format;
    layers.push_back(std::move(j));
  }
  for (const auto& [id, u] : unavailable_) {
    unavailable.push_back(
        {{"snapshot_id", id},
         {"ref", u.source.image_ref},
         {"digest",
          u.source.layer.digest.empty() ? std::string() : u.source.layer.digest.ToString()},
         {"error", u.error}});
  }
  out["layers"] = std::move(layers);
  out["unavailable"] = std::move(unavailable);
  if (scheduler_ != nullptr) out["fetch"] = scheduler_->StatusJson();
  if (elf_prefetcher_ != nullptr) out["elf_prefetch"] = elf_prefetcher_->Stats().ToJson();
  return out;
}

absl::Status RemoteLayerManager::WriteStatusFile() const {
  // A daemon that never saw a remote layer leaves its root as the plain snapshotter does.
  if (!status_active_) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(status_write_mu_);
  // Durable (a crash leaves the old or the new file); 0600: it names images.
  return WriteFileAtomically(options_.root + "/" + kStatusFileName, StatusJson().dump(2) + "\n",
                             0600);
}

void RemoteLayerManager::StatusLoop() {
  std::unique_lock<std::mutex> lock(status_mu_);
  while (!stopping_) {
    lock.unlock();
    absl::Status s = RunGuarded("status writer", {}, [&]() -> absl::Status {
      UpdateCacheBudget();
      return WriteStatusFile();
    });
    if (!s.ok()) LogDebug("cannot write status file", {{"error", s.ToString()}});
    lock.lock();
    status_cv_.wait_for(lock, options_.remote.status_interval);
  }
}

}  // namespace lazypull::remote
