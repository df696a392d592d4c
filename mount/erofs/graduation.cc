#include "mount/erofs/graduation.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "base/background_guard.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "mount/erofs/copy_blob_map.h"

namespace lazypull::mount::erofs {
namespace {

constexpr auto kRetryFailedGraduation = std::chrono::minutes(10);
constexpr int kMaxGraduationAttempts = 2;

// The copy of a layer must fit the cache budget by itself (its chunks are released after).
absl::Status CheckBudget(const format::LayerIndex& index, const LayerOrigin& origin) {
  uint64_t data = 0;
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    for (const format::Chunk& c : index.Chunks(ino)) {
      if (c.compression != format::ChunkCompression::kZeros) data += c.length;
    }
  }
  const uint64_t budget = origin.cache->config().max_bytes;
  if (data > budget) {
    return absl::ResourceExhaustedError(fmt::format(
        "the layer's {} data bytes exceed the cache budget (cache.max_bytes = {})", data, budget));
  }
  return absl::OkStatus();
}

}  // namespace

Graduation::Graduation(GraduatedStore* store, const ErofsSupport& support, ErofsAttachment attach,
                       std::chrono::milliseconds check)
    : store_(store), support_(support), attach_(std::move(attach)), check_(check) {}

Graduation::~Graduation() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    job_cancel_ = true;  // a graduation in progress gives up instead of delaying shutdown
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Graduation::AddLazy(const std::shared_ptr<LayerState>& state) {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(lazy_, [](const std::weak_ptr<LayerState>& w) { return w.expired(); });
  lazy_.push_back(state);
}

void Graduation::Watch(const std::shared_ptr<LayerState>& state) {
  std::lock_guard<std::mutex> lock(mu_);
  watched_.push_back(state);
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void Graduation::Drop(const std::string& layer_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (graduating_ == layer_id) job_cancel_ = true;
  release_pending_.erase(layer_id);
  if (absl::Status s = store_->Remove(layer_id); !s.ok()) {
    LogWarn("cannot delete a graduated layer", {{"layer", layer_id}, {"error", s.ToString()}});
  }
}

std::vector<std::string> Graduation::DropAllBut(const std::set<std::string>& keep) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!graduating_.empty() && keep.count(graduating_) == 0) job_cancel_ = true;
  return store_->RemoveAllBut(keep);
}

void Graduation::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, check_);
    if (stopping_) break;
    std::vector<std::shared_ptr<LayerState>> live;
    for (auto it = watched_.begin(); it != watched_.end();) {
      std::shared_ptr<LayerState> s = it->lock();
      bool gone = s == nullptr;
      if (!gone) {
        std::lock_guard<std::mutex> state_lock(s->mu);
        gone = s->kmount == nullptr || s->graduated || s->reads_local;
      }
      if (gone) {
        it = watched_.erase(it);
      } else {
        live.push_back(std::move(s));
        ++it;
      }
    }
    lock.unlock();
    // Nothing thrown below may end this thread (std::terminate would take every lazy mount
    // of the node with it): a failure is a log line and the next check goes on.
    RunGuarded("graduation check", {}, [&] { GraduateReady(live); });
    lock.lock();
  }
}

// Graduates (one at a time) the layers with a fully local mount, switches every lazy mount
// of a graduated layer to its local copy, then releases the chunks the copies now hold.
void Graduation::GraduateReady(const std::vector<std::shared_ptr<LayerState>>& live) {
  std::map<std::string, std::vector<std::shared_ptr<LayerState>>> by_layer;
  for (const auto& s : live) by_layer[s->layer_id].push_back(s);
  for (auto& [layer_id, states] : by_layer) {
    if (!store_->Find(layer_id)) {
      std::shared_ptr<LayerState> ready;
      for (const auto& s : states) {
        if (s->origin.valid() && s->FullyLocal()) ready = s;
      }
      if (ready == nullptr) continue;
      Graduate(layer_id, ready, states);
      if (job_cancel_) return;
    }
    std::optional<GraduatedLayer> local = store_->Find(layer_id);
    if (!local) continue;
    // Where the lazy mounts' blob bytes lie in the copy (none: an older copy; they keep
    // reading chunks).
    std::optional<CopyBlobMap> map;
    if (absl::StatusOr<CopyBlobMap> m = ReadCopyBlobMap(local->dir); m.ok()) {
      map = std::move(*m);
    } else if (m.status().code() != absl::StatusCode::kNotFound) {
      LogWarn("cannot read a graduated layer's blob map; its lazy mounts keep reading chunks",
              {{"layer", layer_id}, {"error", m.status().ToString()}});
    }
    for (const auto& s : states) {
      if (support_.mount_beneath) {
        Switch(*s, *local, map);
      } else {
        ReadFromCopy(*s, *local, map);
      }
    }
  }
  ReleaseGraduatedChunks();
}

// One graduation job: builds the copy, publishes it unless the layer was released meanwhile,
// records a failure (persisted; a layer that failed kMaxGraduationAttempts times is not
// tried again, also after a restart).
void Graduation::Graduate(const std::string& layer_id, const std::shared_ptr<LayerState>& ready,
                          const std::vector<std::shared_ptr<LayerState>>& states) {
  auto set_all = [&](const std::string& g) {
    for (const auto& s : states) s->SetGraduation(g);
  };
  const int failures = store_->Failures(layer_id);
  if (failures >= kMaxGraduationAttempts) {
    set_all("failed");
    if (given_up_.insert(layer_id).second) {
      LogWarn("layer graduation failed before; it stays lazy and is not retried",
              {{"layer", layer_id}, {"attempts", failures}});
    }
    return;
  }
  auto failed = failed_.find(layer_id);
  if (failed != failed_.end() &&
      std::chrono::steady_clock::now() - failed->second < kRetryFailedGraduation) {
    return;
  }
  std::shared_ptr<LayerReader> reader;
  LayerOrigin origin;
  std::shared_ptr<const BlobLayout> lazy_layout;
  std::string fingerprint;
  bool lazy_is_tar = false;
  {
    std::lock_guard<std::mutex> lock(ready->mu);
    reader = ready->reader;
    origin = ready->origin;
    if (ready->source != nullptr) lazy_layout = ready->source->layout();
    fingerprint = ready->fingerprint;
    lazy_is_tar = ready->tar_layout;
  }
  if (reader == nullptr || lazy_layout == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || !ready->Lazy()) return;  // shutting down, or released meanwhile
    graduating_ = layer_id;
    job_cancel_ = false;
  }
  set_all("running");
  LogInfo("graduating layer", {{"layer", layer_id}});
  absl::StatusOr<std::unique_ptr<GraduatedStore::PendingCopy>> built = RunGuarded(
      "graduation", {{"layer", layer_id}},
      [&]() -> absl::StatusOr<std::unique_ptr<GraduatedStore::PendingCopy>> {
        if (absl::Status s = CheckBudget(reader->index(), origin); !s.ok()) return s;
        absl::StatusOr<std::unique_ptr<GraduatedStore::PendingCopy>> copy =
            store_->Build(layer_id, *reader, origin, job_cancel_);
        if (!copy.ok()) return copy;
        // Published with the copy: how lazy mounts that outlive the switch (and
        // later daemons serving their blobs) find their bytes in it.
        std::optional<CopyBlobMap> map =
            MapLazyBlobToCopy(*lazy_layout, fingerprint, lazy_is_tar, (*copy)->stats().method,
                              (*copy)->tar_payloads());
        if (map.has_value()) {
          if (absl::Status s = (*copy)->AddFile(kCopyBlobMapFile, SerializeCopyBlobMap(*map));
              !s.ok()) {
            return s;
          }
        }
        return copy;
      });
  absl::Status published = built.status();
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled = job_cancel_;
    if (published.ok()) {
      published =
          cancelled ? absl::CancelledError("the layer was released") : store_->Publish(**built);
    }
    graduating_.clear();
  }
  GraduationStats g;
  if (built.ok()) {
    g = (*built)->stats();
    built->reset();  // an unpublished copy is deleted here
  }
  if (!published.ok()) {
    if (cancelled || published.code() == absl::StatusCode::kCancelled) {
      set_all("pending");
      LogInfo("layer graduation cancelled", {{"layer", layer_id}});
      return;
    }
    const int attempts = published.code() == absl::StatusCode::kResourceExhausted
                             ? kMaxGraduationAttempts
                             : failures + 1;
    if (absl::Status s = store_->SetFailures(layer_id, attempts); !s.ok()) {
      LogWarn("cannot record a failed graduation", {{"layer", layer_id}, {"error", s.ToString()}});
    }
    failed_[layer_id] = std::chrono::steady_clock::now();
    set_all("failed");
    LogWarn("layer graduation failed; it stays lazy",
            {{"layer", layer_id},
             {"error", published.ToString()},
             {"attempts", attempts},
             {"retried", attempts < kMaxGraduationAttempts}});
    return;
  }
  LogInfo("layer graduated", {{"layer", layer_id},
                              {"method", g.method},
                              {"data_bytes", g.data_bytes},
                              {"disk_bytes", g.disk_bytes},
                              {"fetched_bytes", g.fetched_bytes},
                              {"chunks_verified", g.chunks_verified},
                              {"seconds", g.seconds}});
  origin.cache->SetExternalBytes(store_->DiskBytes());
  std::lock_guard<std::mutex> lock(mu_);
  release_pending_[layer_id] = PendingRelease{reader, origin.cache};
}

// Releases from the chunk cache the chunks of graduated layers whose lazy mounts have all
// switched (they read the copy now), except chunks another lazy layer of this backend uses.
// Layers mounted by another backend of the daemon are not seen: a chunk they share may be
// fetched again.
void Graduation::ReleaseGraduatedChunks() {
  std::map<std::string, PendingRelease> ready;
  absl::flat_hash_set<std::string> in_use;  // hex digests other lazy layers read
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (release_pending_.empty()) return;
    std::set<std::string> still_lazy;
    for (const auto& w : lazy_) {
      std::shared_ptr<LayerState> s = w.lock();
      if (s == nullptr) continue;
      std::lock_guard<std::mutex> state_lock(s->mu);
      if (!s->ReadsChunks() || s->reader == nullptr) continue;
      still_lazy.insert(s->layer_id);
      if (release_pending_.count(s->layer_id) > 0) continue;
      const format::LayerIndex& index = s->reader->index();
      for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
        for (const format::Chunk& c : index.Chunks(ino)) {
          if (c.has_digest) in_use.insert(c.digest_value().hex());
        }
      }
    }
    for (auto it = release_pending_.begin(); it != release_pending_.end();) {
      if (still_lazy.count(it->first) > 0) {
        ++it;
        continue;
      }
      ready.insert(*it);
      it = release_pending_.erase(it);
    }
  }
  for (const auto& [layer_id, p] : ready) {
    const format::LayerIndex& index = p.reader->index();
    uint64_t chunks = 0, bytes = 0;
    for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
      for (const format::Chunk& c : index.Chunks(ino)) {
        if (!c.has_digest || c.compression == format::ChunkCompression::kZeros) continue;
        const Digest d = c.digest_value();
        if (in_use.count(d.hex()) > 0 || !p.cache->Contains(d)) continue;
        p.cache->Remove(d);
        ++chunks;
        bytes += c.length;
      }
    }
    LogInfo("released a graduated layer's chunks from the cache",
            {{"layer", layer_id}, {"chunks", chunks}, {"bytes", bytes}});
  }
}

// Replaces a lazy mount by the local copy in place.
void Graduation::Switch(LayerState& s, const GraduatedLayer& local,
                        const std::optional<CopyBlobMap>& map) {
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.graduated || s.kmount == nullptr || s.switch_refused) return;
  absl::StatusOr<std::unique_ptr<KernelErofsMount>> m =
      KernelErofsMount::MountBeneath(local.image, local.data, s.target, attach_);
  if (!m.ok()) {
    s.switch_refused = m.status().code() == absl::StatusCode::kInternal;
    LogWarn("cannot switch a layer to its local copy; it stays lazy",
            {{"layer", s.layer_id}, {"target", s.target}, {"error", m.status().ToString()}});
    return;
  }
  s.kmount->Release();  // detached by MountBeneath; its users keep it
  s.kmount = std::move(*m);
  s.last_stats = s.reader->Stats();
  // The detached lazy mount keeps its blob file (and the reader it holds) until the kernel
  // releases it; its reads now come from the local copy, since the chunks are released.
  if (s.source != nullptr && map.has_value() && map->fingerprint == s.fingerprint) {
    auto fd = std::make_shared<UniqueFd>(::open(local.data.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd->valid()) s.source->UseLocalCopy(std::move(fd), *map);
  }
  s.blob_file.reset();
  s.source.reset();
  s.reader.reset();
  s.graduated = true;
  s.graduation = "done";
  LogInfo("layer now served from its local copy",
          {{"layer", s.layer_id}, {"target", s.target}, {"backend", "erofs"}});
}

// Without MOVE_MOUNT_BENEATH (before Linux 6.5) a lazy mount cannot be replaced in place: it
// stays lazy (EROFS over its blob file) until unmounted, but its blob file reads the local
// copy from now on, so the layer's chunks can leave the cache. New mounts of the layer mount
// the copy itself.
void Graduation::ReadFromCopy(LayerState& s, const GraduatedLayer& local,
                              const std::optional<CopyBlobMap>& map) {
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.ReadsChunks() || s.source == nullptr) return;
  // A copy without a map for this layout (an older one): keep reading chunks.
  if (!map.has_value() || map->fingerprint != s.fingerprint) return;
  auto fd = std::make_shared<UniqueFd>(::open(local.data.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd->valid()) {
    LogWarn("cannot open a graduated layer's copy; the mount keeps reading chunks",
            {{"layer", s.layer_id}, {"file", local.data}, {"error", strerror(errno)}});
    return;
  }
  s.source->UseLocalCopy(std::move(fd), *map);
  s.reads_local = true;
  s.graduation = "done";
  LogInfo("layer graduated; this mount stays lazy and reads the local copy",
          {{"layer", s.layer_id},
           {"target", s.target},
           {"reason", "no MOVE_MOUNT_BENEATH: new mounts of the layer use the local copy"}});
}

}  // namespace lazypull::mount::erofs
