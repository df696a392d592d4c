// RemoteLayerManager: the production RemoteLayerHandler. Turns Prepare labels into a lazily
// mounted layer:
//
//   labels → LayerSource (layer_source.h) → manifest (RegistryClient::Resolve, cached per
//   reference) → layer descriptor (annotations from the manifest, completed by those that
//   arrived as labels) → BlobReader (registry range reads) → LayerIndex (format detection,
//   verified TOC) → LayerReader (ChunkCache, shared FetchExecutor) → LayerMountBackend mount
//   at the snapshot's fs dir → prefetch + background fetch.
//
// A layer the backend already holds locally (an EROFS-graduated layer) is mounted from that
// copy first, with neither index nor registry, so restarts re-mount it before gRPC serves even
// when the registry is gone. The label kBackendLabel picks the backend per snapshot.
//
// The resolved source is returned as labels (kSourceRefLabel, kSourceLayerLabel) that the
// Snapshotter stores with the committed snapshot, so RestoreRemoteLayer re-mounts from
// metadata alone. Restores are queued on `restore_concurrency` threads and awaited in
// FinishRestore (the daemon calls it before serving gRPC). A layer that cannot be re-mounted
// makes CheckLayerAvailable answer UNAVAILABLE (or FinishRestore fail, with
// `[remote] fail_on_restore_error`).
//
// Operator status: every status_interval the manager rewrites <root>/status.json (atomically)
// with one entry per mounted layer (see StatusJson); `lazypull status` prints it. The file and
// the chunk cache (<root>/cache by default) appear with the first remote layer.
//
// FUSE handover (issue 20): when a FUSE holder listens at `[mount] fuse_holder_socket`
// (default <root>/fuse-holder.sock), FUSE mounts (the FUSE backend's per-layer mounts and the
// EROFS backend's blob file system) are registered with it, a restarted daemon adopts the ones
// its snapshots use (the EROFS backend takes back each snapshot's lazy EROFS mount, keyed by
// snapshot id; FinishRestore releases the others), and destruction leaves them to the holder
// (HandOverAll) instead of unmounting.
//
// Thread-safety: all methods are thread-safe. Destruction unmounts (or hands over) every
// layer, in parallel with nothing: callers must have stopped RPCs first.
#ifndef LAZYPULL_SERVER_REMOTE_REMOTE_LAYER_MANAGER_H_
#define LAZYPULL_SERVER_REMOTE_REMOTE_LAYER_MANAGER_H_

#include <toml++/toml.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/background_scheduler.h"
#include "fetcher/layer_reader/fetch_executor.h"
#include "fetcher/registry/credential_provider.h"
#include "fetcher/registry/registry_client.h"
#include "fetcher/startup/elf_prefetcher.h"
#include "metrics/metrics.h"
#include "mount/backend.h"
#include "mount/mount_config.h"
#include "nlohmann/json.hpp"
#include "server/config.h"
#include "server/remote/layer_source.h"
#include "server/remote/remote_config.h"
#include "server/remote/soci_discovery.h"
#include "server/remote_layer_handler.h"

namespace lazypull::remote {

// Status file name under the daemon root.
inline constexpr char kStatusFileName[] = "status.json";
// Per-snapshot backend override ("fuse" or "erofs"), for experiments.
inline constexpr char kBackendLabel[] = "containerd.io/snapshot/lazypull.backend";

class RemoteLayerManager final : public RemoteLayerHandler {
 public:
  struct Options {
    std::string root;  // daemon root: status.json, default cache dir <root>/cache
    RemoteConfig remote;
    registry::RegistryConfig registry;
    CacheConfig cache;  // cache.dir "" → <root>/cache
    mount::MountConfig mount;
    // Null → a libcurl transport.
    std::unique_ptr<registry::HttpTransport> transport;
    // The daemon's metrics (issue 11): registry requests and FUSE requests are recorded into
    // it, and the manager adds a scrape-time source (CollectMetrics). Null = none.
    std::shared_ptr<metrics::Metrics> metrics;
    // Which zTOC belongs to which layer (SOCI indexes): a gzip layer with no lazy format of its
    // own is served through its zTOC when this names one. Null = no SOCI.
    std::unique_ptr<SociDiscovery> soci_discovery;
    // Whether soci_discovery looks for v1 indexes (`[soci] v1`): named in the fallback reason
    // of a layer no index covers.
    bool soci_v1 = false;
  };

  // Opens the chunk cache, creates the mount backend, lazily detaches stale FUSE mounts under
  // <root>/snapshots (left by a crashed daemon) and starts the status writer.
  static absl::StatusOr<std::unique_ptr<RemoteLayerManager>> Create(Options options);

  // Parses the [registry], [cache], [mount] and [remote] sections of the daemon's TOML
  // document (each optional) into Options. InvalidArgument naming the bad key.
  static absl::StatusOr<Options> OptionsFromToml(const std::string& root, const toml::table& doc);

  ~RemoteLayerManager() override;
  RemoteLayerManager(const RemoteLayerManager&) = delete;
  RemoteLayerManager& operator=(const RemoteLayerManager&) = delete;

  // RemoteLayerHandler.
  absl::StatusOr<Labels> PrepareRemoteLayer(const RemoteLayerRequest& request,
                                            const std::string& fs_dir) override;
  absl::Status RestoreRemoteLayer(int64_t snapshot_id, const SnapshotInfo& info,
                                  const std::vector<int64_t>& parent_ids,
                                  const std::string& fs_dir) override;
  absl::Status FinishRestore() override;
  absl::Status CheckLayerAvailable(int64_t snapshot_id) override;
  // Walks the program the image of the chain's top layer starts (PrefetchImageStart).
  void ContainerPrepared(const std::vector<int64_t>& parent_ids) override;
  absl::Status ReleaseRemoteLayer(int64_t snapshot_id, const std::string& fs_dir) override;

  // Unmounts every layer now (clean shutdown). Idempotent.
  void UnmountAll();
  // Stops serving every layer without unmounting: FUSE mounts stay with the FUSE holder for
  // the next daemon (issue 20); others are unmounted. What destruction does with a holder.
  void HandOverAll();

  // {"pid": ..., "updated": "<RFC 3339>", "layers": [{"snapshot_id": ..., "ref": ...,
  //  "digest": ..., "format": ..., <LayerMountStatus::ToJson() fields>}],
  //  "unavailable": [{"snapshot_id": ..., "ref": ..., "digest": ..., "error": ...}],
  //  "disk": {"graduated_bytes": ..., "cache_bytes": ..., "max_bytes": ...},
  //  "fetch": BackgroundScheduler::StatusJson()}
  nlohmann::json StatusJson() const;
  // Writes StatusJson() to <root>/status.json (0600) with WriteFileAtomically
  // (base/atomic_file.h).
  absl::Status WriteStatusFile() const;

  // Adds the manager's metrics to a scrape (remote_metrics.cc): chunk cache, registry
  // retries, per-layer and node-wide fetch counters, background fetch, mounted layers.
  void CollectMetrics(metrics::FamilySet& out);

  size_t mounted_count() const;
  registry::RegistryClient& registry_client() { return *client_; }

 private:
  // remote_layer_soci.cc. For a gzip layer without a lazy format of its own: records the zTOC
  // that SOCI discovery names for it in resolved->layer's annotations. Discovery errors are
  // returned as a note for the fallback log line ("" when none).
  std::string AttachZtoc(const registry::Reference& pinned, const registry::ResolvedImage& image,
                         ResolvedLayer* resolved);
  // The layer's index through its recorded zTOC, or nullopt when none is recorded.
  std::optional<absl::StatusOr<std::shared_ptr<const format::LayerIndex>>> OpenSociIndex(
      const ResolvedLayer& layer);

  struct MountedEntry {
    ResolvedLayer source;
    std::string format;
    std::unique_ptr<mount::MountedLayer> mounted;
    std::vector<int64_t> parent_ids;    // the snapshot's parent chain, nearest first
    std::weak_ptr<LayerReader> reader;  // lazy layers (not local copies)
  };
  struct PendingRestore {
    int64_t snapshot_id;
    std::string name;
    Labels labels;
    std::vector<int64_t> parent_ids;
    std::string fs_dir;
  };

  explicit RemoteLayerManager(Options options);

  // Finds the layer in its image's manifest and merges its annotations.
  absl::StatusOr<ResolvedLayer> Resolve(const LayerSource& source);
  absl::StatusOr<registry::ResolvedImage> ResolveImage(const registry::Reference& ref,
                                                       bool allow_cached);
  // Starts opening, in parallel, the indexes of the other lazy layers of `layer`'s image that
  // `source` names (all of the manifest's when it names none), so their Prepares only mount:
  // eStargz / zstd:chunked layers (their annotations say so) and gzip layers the image's SOCI
  // index has a zTOC for (the zTOC is fetched and verified now).
  void PreloadImageLayers(const LayerSource& source, const ResolvedLayer& layer);
  // A layer's index and, when it was preloaded, the LayerReader made on it (which its mount
  // adopts: a start walk may already fetch through it). Value type.
  struct PreloadedLayer {
    std::shared_ptr<const format::LayerIndex> index;
    std::shared_ptr<LayerReader> reader;  // null: the mount makes one
  };
  // The layer's index (and reader): a preloaded one when there is one (taken: a later call
  // opens the index again), else opened now (from the bytes an earlier open kept under
  // IndexBytesDir() when there are, so a restart needs no registry) with no reader.
  absl::StatusOr<PreloadedLayer> OpenLayerFor(const ResolvedLayer& layer,
                                              const std::shared_ptr<BlobReader>& blob);
  // Drops the preload of `layer` that its Prepare took (its mount is now recorded). Caller
  // holds mu_.
  void ForgetPreloadLocked(const ResolvedLayer& layer);
  // The options of the readers of layers from registry `host`.
  LayerReaderOptions ReaderOptions(const std::string& host) const;
  // The readers of every layer of `image` (`layer`'s image), top first, from their mounts or,
  // waiting for them, their preloads; empty when a layer has neither. Blocks: call it on a
  // prefetcher thread, never holding mu_.
  std::vector<std::shared_ptr<LayerReader>> EarlyImageStack(const ResolvedLayer& layer,
                                                            const registry::ResolvedImage& image);
  // <root>/index-bytes: per layer digest, the blob bytes its index was parsed from.
  std::string IndexBytesDir() const { return options_.root + "/index-bytes"; }
  // Opens, indexes and mounts `layer` at fs_dir and records it under snapshot_id. `backend`:
  // the kBackendLabel value ("" = configured backend). A layer the backend holds locally is
  // mounted from there without index or registry.
  absl::Status MountLayer(int64_t snapshot_id, const ResolvedLayer& layer,
                          const std::vector<int64_t>& parent_ids, const std::string& fs_dir,
                          const std::string& backend);
  // The ElfPrefetcher's LayerStackFn: the readers of the newest mounted snapshot chain that
  // holds layer `layer_id`, top first (lazy layers only).
  std::vector<std::shared_ptr<LayerReader>> LayerStack(const std::string& layer_id) const;
  // The walk of the program the containers of `layer`'s image start (image config), while
  // the image is pulled or the container created (ElfPrefetcher::PrefetchStart); once per top
  // layer. From the top layer's mount, or from a lower layer's as soon as every layer of the
  // image has a reader (EarlyImageStack: the others' preloads).
  void PrefetchImageStart(const ResolvedLayer& layer);
  // EROFS backend: mounts the backend's local copy of `layer` (NotFound if none).
  absl::Status MountLocalLayer(int64_t snapshot_id, const ResolvedLayer& layer,
                               const std::vector<int64_t>& parent_ids, const std::string& fs_dir,
                               const std::string& backend);
  // Where graduation gets the layer's diff_id and compressed blob (through client_; `blob`
  // reads ranges of it).
  mount::LayerOrigin OriginOf(const ResolvedLayer& layer, std::shared_ptr<BlobReader> blob);
  void RestoreOne(const PendingRestore& pending);
  // After the restores: ends the backend's restore (LayerMountBackend::FinishRestore), then
  // unmounts and releases every mount the FUSE holder keeps that no restored snapshot adopted
  // and the backend does not serve.
  void ReleaseUnadoptedHeld();
  // Tells the chunk cache (if open) how many bytes the backend's local copies take, so they
  // count against its max_bytes.
  void UpdateCacheBudget();
  // The chunk cache, opened on first use (so a daemon without remote layers creates nothing
  // under its root). Errors of ChunkCache::Open; retried on the next call.
  absl::StatusOr<ChunkCache*> Cache();
  void StatusLoop();

  Options options_;
  std::unique_ptr<registry::RegistryClient> client_;
  std::mutex cache_mu_;
  std::unique_ptr<ChunkCache> cache_;            // guarded by cache_mu_ until set; then immutable
  std::atomic<ChunkCache*> cache_ptr_{nullptr};  // cache_ once set, for readers without the lock
  std::atomic<bool> status_active_{false};       // set by the first mount attempt
  std::unique_ptr<mount::LayerMountBackend> backend_;
  std::shared_ptr<FetchExecutor> executor_;
  std::shared_ptr<BackgroundScheduler> scheduler_;
  // Null when `[mount] elf_prefetch = false`. Stopped after UnmountAll in the destructor.
  std::shared_ptr<startup::ElfPrefetcher> elf_prefetcher_;

  mutable std::mutex mu_;
  std::map<int64_t, MountedEntry> mounted_;  // by snapshot id
  struct Unavailable {
    ResolvedLayer source;
    std::string error;
  };
  std::map<int64_t, Unavailable> unavailable_;
  // Counters of layers already released, so node-wide metric totals never go down.
  LayerReaderStats retired_;
  struct HandoverCounters {
    uint64_t adoptions = 0;        // mounts taken over from a previous daemon
    uint64_t resent_requests = 0;  // requests the kernel resent after FUSE_NOTIFY_RESEND
  };
  HandoverCounters retired_handover_;  // of layers already released
  std::vector<PendingRestore> pending_restores_;
  struct CachedImage {
    registry::ResolvedImage image;
    std::chrono::steady_clock::time_point fetched;
  };
  std::map<std::string, CachedImage> images_;  // by reference string
  // Top layers whose image start was prefetched (PrefetchImageStart), by digest; forgotten
  // beyond kMaxStartHinted.
  static constexpr size_t kMaxStartHinted = 4096;
  absl::flat_hash_set<std::string> start_hinted_;
  // Top layers an early start hint (from a lower layer's Prepare) is waiting for.
  absl::flat_hash_set<std::string> early_hints_;
  // SOCI discovery answers by manifest digest (a digest's index never changes, but a SOCI index
  // may be pushed after the image: entries expire after manifest_cache). Guarded by mu_.
  struct CachedZtocs {
    absl::StatusOr<std::map<Digest, oci::Descriptor>> ztocs;
    std::chrono::steady_clock::time_point fetched;
  };
  std::map<Digest, CachedZtocs> ztocs_;
  // Indexes being opened ahead of their Prepare, by pinned image ref + " " + layer digest.
  // Declared after client_: destroyed (waiting for their tasks) before it.
  struct Preload {
    std::shared_future<absl::StatusOr<PreloadedLayer>> layer;
    std::chrono::steady_clock::time_point started;
    bool taken = false;  // by the layer's Prepare (OpenLayerFor), until its mount is recorded
  };
  std::map<std::string, Preload> preloads_;
  // Preloads dropped unused whose task may still run (a stalled registry): never waited for
  // under mu_ (that would stall every Prepare); dropped once ready, else waited for at
  // destruction.
  std::vector<Preload> retired_preloads_;

  std::mutex status_mu_;
  std::condition_variable status_cv_;
  // Serializes status file writes, each taking its snapshot under it: without it the status
  // thread's snapshot from before a restore could land after the restore's own write (its fsync
  // is slow) and leave stale content until the next interval.
  mutable std::mutex status_write_mu_;
  bool stopping_ = false;
  std::thread status_thread_;
  // Last: reset first in the destructor, so no scrape sees a half-destroyed manager.
  metrics::Metrics::SourceHandle metrics_source_;
};

// The daemon's factory (Daemon::RemoteLayerFactory): a RemoteLayerManager configured from
// config.table, or null when `[remote] enabled = false`. Errors: bad config sections, cache or
// backend that cannot be opened.
absl::StatusOr<std::unique_ptr<RemoteLayerHandler>> NewRemoteLayerHandler(
    const DaemonConfig& config);
// The same, with credentials consulted before the [registry] ones (the CRI keychain; may be
// null).
absl::StatusOr<std::unique_ptr<RemoteLayerHandler>> NewRemoteLayerHandlerWithCredentials(
    const DaemonConfig& config,
    std::shared_ptr<const registry::CredentialProvider> extra_credentials,
    std::shared_ptr<metrics::Metrics> metrics = nullptr);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_REMOTE_LAYER_MANAGER_H_
