#include "mount/erofs/erofs_backend.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "base/logging.h"
#include "fmt/format.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/graduated_store.h"
#include "mount/erofs/image_writer.h"
#include "mount/erofs/kernel_mount.h"
#include "mount/erofs/lazy_blob.h"
#include "mount/fuse/stale_mounts.h"

namespace lazypull::mount {
namespace {

using erofs::BlobFs;
using erofs::GraduatedLayer;
using erofs::GraduatedStore;
using erofs::KernelErofsMount;

constexpr auto kRetryFailedGraduation = std::chrono::minutes(10);

// File-name-safe form of a layer id ("sha256:ab.." → "sha256-ab..").
std::string SafeName(const std::string& id) {
  std::string out;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    out.push_back(ok ? c : '-');
  }
  return out.substr(0, 120);
}

std::array<uint8_t, 16> UuidOf(const std::string& id) {
  std::string raw = Digest::Of(id).hex();
  std::array<uint8_t, 16> uuid{};
  for (size_t i = 0; i < uuid.size(); ++i) {
    uuid[i] = static_cast<uint8_t>(std::stoi(raw.substr(2 * i, 2), nullptr, 16));
  }
  return uuid;
}

// Whatever a previous daemon left mounted at `target` (an EROFS mount whose blob file system
// is gone, a dead FUSE mount) is detached so the new mount is the only one there. Overlays
// built on the old mount keep it.
absl::Status DetachOldMount(const std::string& target) {
  if (!erofs::IsMountOfType(target, "erofs") && !IsStaleFuseMount(target)) {
    return absl::OkStatus();
  }
  if (::umount2(target.c_str(), MNT_DETACH) != 0) {
    return absl::ErrnoToStatus(errno, fmt::format("detaching the old mount at {}", target));
  }
  LogInfo("detached an old layer mount", {{"target", target}});
  return absl::OkStatus();
}

// One mounted layer: lazy (EROFS + blob file) until it graduates (EROFS over the local copy).
// Shared between the handle and the backend's graduation thread. Guarded by mu.
struct LayerState {
  std::mutex mu;
  std::string layer_id;
  std::string target;
  LayerOrigin origin;
  std::unique_ptr<KernelErofsMount> kmount;
  std::unique_ptr<BlobFs::File> blob_file;  // lazy only
  std::shared_ptr<LayerReader> reader;      // lazy only
  LayerReaderStats last_stats;              // once the reader is gone
  bool graduated = false;
  bool background = false;      // StartBackground was called
  bool switch_refused = false;  // a switch left a mount beneath: never again on this target

  // Whether the lazy layer's chunks are all local (its reader says so).
  bool FullyLocal() {
    std::lock_guard<std::mutex> lock(mu);
    if (graduated || kmount == nullptr || reader == nullptr || !background) return false;
    LayerReaderStats s = reader->Stats();
    return s.total_chunks == s.local_chunks;
  }
};

class ErofsBackend;

class ErofsMountedLayer : public MountedLayer {
 public:
  ErofsMountedLayer(ErofsBackend* backend, std::shared_ptr<LayerState> state)
      : backend_(backend), state_(std::move(state)) {}
  ~ErofsMountedLayer() override {
    if (absl::Status s = Unmount(); !s.ok()) {
      LogWarn("unmounting an EROFS layer failed",
              {{"layer", state_->layer_id}, {"error", s.ToString()}});
    }
  }
  const std::string& target() const override { return state_->target; }
  void StartBackground() override;
  absl::Status Unmount() override {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->kmount == nullptr) return absl::OkStatus();
    // Blob reads blocked on a stalled registry must not hold the unmount: cancel them.
    if (state_->reader != nullptr) state_->reader->Stop();
    absl::Status s = state_->kmount->Unmount();
    state_->kmount.reset();
    state_->blob_file.reset();
    if (state_->reader != nullptr) state_->last_stats = state_->reader->Stats();
    state_->reader.reset();
    LogInfo("lazy layer unmounted", {{"layer", state_->layer_id}, {"target", state_->target}});
    return s;
  }
  LayerMountStatus Status() const override {
    std::lock_guard<std::mutex> lock(state_->mu);
    LayerMountStatus s;
    s.layer_id = state_->layer_id;
    s.backend = "erofs";
    s.target = state_->target;
    s.mounted = state_->kmount != nullptr;
    s.graduated = state_->graduated;
    s.reader = state_->reader != nullptr ? state_->reader->Stats() : state_->last_stats;
    return s;
  }

 private:
  ErofsBackend* backend_;
  std::shared_ptr<LayerState> state_;
};

class ErofsBackend : public LayerMountBackend {
 public:
  ErofsBackend(const ErofsOptions& erofs, const FuseOptions& fuse)
      : options_(erofs), fuse_(fuse), store_(erofs.dir + "/graduated") {}

  ~ErofsBackend() override {
    cancel_ = true;  // a graduation in progress gives up instead of delaying shutdown
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    // Lazy mounts still alive (detached, in use) lose their data path now, as FUSE mounts do.
    std::lock_guard<std::mutex> lock(blobs_mu_);
    blobs_.reset();
  }

  std::string_view name() const override { return "erofs"; }

  absl::StatusOr<std::unique_ptr<MountedLayer>> Mount(const LayerMountRequest& request) override {
    if (!request.reader || request.target_dir.empty() || request.target_dir[0] != '/') {
      return absl::InvalidArgumentError(
          fmt::format("layer {}: a mount needs a reader and an absolute target (got \"{}\")",
                      request.layer_id, request.target_dir));
    }
    if (absl::Status s = DetachOldMount(request.target_dir); !s.ok()) return s;
    if (options_.graduation) {
      absl::StatusOr<std::unique_ptr<MountedLayer>> local =
          MountGraduated(request.layer_id, request.target_dir, &request);
      if (local.ok() || local.status().code() != absl::StatusCode::kNotFound) return local;
    }
    return MountLazy(request);
  }

  absl::StatusOr<std::unique_ptr<MountedLayer>> MountLocal(const std::string& layer_id,
                                                           const std::string& target_dir,
                                                           std::string_view) override {
    if (!options_.graduation) return absl::NotFoundError("graduation is off");
    if (absl::Status s = DetachOldMount(target_dir); !s.ok()) return s;
    return MountGraduated(layer_id, target_dir, nullptr);
  }

  void DropLocal(const std::string& layer_id) override {
    if (absl::Status s = store_.Remove(layer_id); !s.ok()) {
      LogWarn("cannot delete a graduated layer", {{"layer", layer_id}, {"error", s.ToString()}});
    }
  }

  // Registers a lazy layer whose background fetch runs, for the graduation thread.
  void Watch(std::shared_ptr<LayerState> state) {
    if (!options_.graduation) return;
    std::lock_guard<std::mutex> lock(mu_);
    watched_.push_back(state);
    if (!thread_.joinable()) thread_ = std::thread([this] { GraduationLoop(); });
  }

 private:
  // Mounts the local copy of `layer_id` if there is one (NotFound otherwise).
  absl::StatusOr<std::unique_ptr<MountedLayer>> MountGraduated(const std::string& layer_id,
                                                               const std::string& target,
                                                               const LayerMountRequest* request) {
    std::optional<GraduatedLayer> local = store_.Find(layer_id);
    if (!local) return absl::NotFoundError("layer " + layer_id + " has not graduated");
    absl::StatusOr<std::unique_ptr<KernelErofsMount>> m =
        KernelErofsMount::Mount(local->image, local->tar, target);
    if (!m.ok()) {
      LogWarn("cannot mount a graduated layer; mounting it lazily",
              {{"layer", layer_id}, {"error", m.status().ToString()}});
      return absl::NotFoundError(std::string(m.status().message()));
    }
    auto state = std::make_shared<LayerState>();
    state->layer_id = layer_id;
    state->target = target;
    state->kmount = std::move(*m);
    state->graduated = true;
    if (request != nullptr) state->last_stats = request->reader->Stats();
    LogInfo("lazy layer mounted",
            {{"layer", layer_id}, {"target", target}, {"backend", "erofs"}, {"graduated", true}});
    return std::unique_ptr<MountedLayer>(new ErofsMountedLayer(this, std::move(state)));
  }

  absl::StatusOr<BlobFs*> Blobs() {
    std::lock_guard<std::mutex> lock(blobs_mu_);
    if (blobs_ == nullptr) {
      std::error_code ec;
      std::filesystem::create_directories(options_.dir + "/blobs", ec);
      std::filesystem::create_directories(options_.dir + "/images", ec);
      if (ec) return absl::InternalError(fmt::format("create {}: {}", options_.dir, ec.message()));
      // Layer data and metadata of private images: for the daemon's user only, also when the
      // directories existed wider (the dir may be configured outside the 0700 root).
      for (const std::string& d : {options_.dir, options_.dir + "/images"}) {
        if (::chmod(d.c_str(), 0700) != 0) {
          return absl::ErrnoToStatus(errno, fmt::format("chmod 0700 {}", d));
        }
      }
      erofs::BlobFsOptions o;
      o.max_threads = fuse_.max_threads;
      o.max_read = fuse_.max_read;
      o.unmount_timeout = fuse_.unmount_timeout;
      o.op_observer = fuse_.op_observer;
      absl::StatusOr<std::unique_ptr<BlobFs>> fs = BlobFs::Mount(options_.dir + "/blobs", o);
      if (!fs.ok()) return fs.status();
      blobs_ = std::move(*fs);
    }
    return blobs_.get();
  }

  absl::StatusOr<std::unique_ptr<MountedLayer>> MountLazy(const LayerMountRequest& request) {
    absl::StatusOr<BlobFs*> blobs = Blobs();
    if (!blobs.ok()) return blobs.status();
    const format::LayerIndex& index = request.reader->index();
    absl::StatusOr<erofs::BlobLayout> layout = erofs::PlanBlobLayout(index, 12);
    if (!layout.ok()) return layout.status();
    auto shared_layout = std::make_shared<const erofs::BlobLayout>(std::move(*layout));
    std::unique_ptr<BlobFs::File> file =
        (*blobs)->Add(SafeName(request.layer_id),
                      std::make_shared<erofs::LazyBlobSource>(request.reader, shared_layout));
    const std::string image = fmt::format("{}/images/{}.erofs", options_.dir, file->name());
    erofs::ImageOptions image_options;
    image_options.device_tag = file->path();
    image_options.uuid = UuidOf(request.layer_id);
    if (absl::Status s = erofs::WriteErofsImage(index, shared_layout->device, image_options, image);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::unique_ptr<KernelErofsMount>> m =
        KernelErofsMount::Mount(image, file->path(), request.target_dir);
    ::unlink(image.c_str());  // the kernel holds it
    if (!m.ok()) {
      return absl::Status(m.status().code(), fmt::format("layer {}: {}", request.layer_id,
                                                         std::string(m.status().message())));
    }
    auto state = std::make_shared<LayerState>();
    state->layer_id = request.layer_id;
    state->target = request.target_dir;
    state->origin = request.origin;
    state->kmount = std::move(*m);
    state->blob_file = std::move(file);
    state->reader = request.reader;
    LogInfo("lazy layer mounted", {{"layer", request.layer_id},
                                   {"target", request.target_dir},
                                   {"backend", "erofs"},
                                   {"blob", state->blob_file->path()},
                                   {"blob_bytes", shared_layout->size}});
    return std::unique_ptr<MountedLayer>(new ErofsMountedLayer(this, std::move(state)));
  }

  void GraduationLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, options_.graduation_check);
      if (stopping_) break;
      std::vector<std::shared_ptr<LayerState>> live;
      for (auto it = watched_.begin(); it != watched_.end();) {
        std::shared_ptr<LayerState> s = it->lock();
        bool gone = s == nullptr;
        if (!gone) {
          std::lock_guard<std::mutex> state_lock(s->mu);
          gone = s->kmount == nullptr || s->graduated;
        }
        if (gone) {
          it = watched_.erase(it);
        } else {
          live.push_back(std::move(s));
          ++it;
        }
      }
      lock.unlock();
      GraduateReady(live);
      lock.lock();
    }
  }

  // Graduates (one at a time) the layers with a fully local mount, then switches every lazy
  // mount of a graduated layer to its local copy.
  void GraduateReady(const std::vector<std::shared_ptr<LayerState>>& live) {
    std::map<std::string, std::vector<std::shared_ptr<LayerState>>> by_layer;
    for (const auto& s : live) by_layer[s->layer_id].push_back(s);
    for (auto& [layer_id, states] : by_layer) {
      if (!store_.Find(layer_id)) {
        std::shared_ptr<LayerState> ready;
        for (const auto& s : states) {
          if (s->origin.valid() && s->FullyLocal()) ready = s;
        }
        if (ready == nullptr) continue;
        auto failed = failed_.find(layer_id);
        if (failed != failed_.end() &&
            (failed->second.permanent ||
             std::chrono::steady_clock::now() - failed->second.at < kRetryFailedGraduation)) {
          continue;
        }
        std::shared_ptr<LayerReader> reader;
        LayerOrigin origin;
        {
          std::lock_guard<std::mutex> lock(ready->mu);
          reader = ready->reader;
          origin = ready->origin;
        }
        if (reader == nullptr) continue;
        LogInfo("graduating layer", {{"layer", layer_id}});
        absl::StatusOr<erofs::GraduationStats> g =
            store_.Graduate(layer_id, *reader, origin, cancel_);
        if (cancel_) return;
        if (!g.ok()) {
          // Content that does not match its digests never will: do not download it again.
          failed_[layer_id] = {.at = std::chrono::steady_clock::now(),
                               .permanent = g.status().code() == absl::StatusCode::kDataLoss};
          LogWarn("layer graduation failed; it stays lazy",
                  {{"layer", layer_id}, {"error", g.status().ToString()}});
          continue;
        }
        LogInfo("layer graduated", {{"layer", layer_id},
                                    {"tar_bytes", g->tar_bytes},
                                    {"method", g->method},
                                    {"fetched_bytes", g->compressed_bytes},
                                    {"chunks_verified", g->chunks_verified},
                                    {"seconds", g->seconds}});
      }
      std::optional<GraduatedLayer> local = store_.Find(layer_id);
      if (!local) continue;
      for (const auto& s : states) Switch(*s, *local);
    }
  }

  // Replaces a lazy mount by the local copy in place.
  void Switch(LayerState& s, const GraduatedLayer& local) {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.graduated || s.kmount == nullptr || s.switch_refused) return;
    absl::StatusOr<std::unique_ptr<KernelErofsMount>> m =
        KernelErofsMount::MountBeneath(local.image, local.tar, s.target);
    if (!m.ok()) {
      s.switch_refused = m.status().code() == absl::StatusCode::kInternal;
      LogWarn("cannot switch a layer to its local copy; it stays lazy",
              {{"layer", s.layer_id}, {"target", s.target}, {"error", m.status().ToString()}});
      return;
    }
    s.kmount->Release();  // detached by MountBeneath; its users keep it
    s.kmount = std::move(*m);
    s.last_stats = s.reader->Stats();
    // The blob file's name goes; the detached lazy mount keeps the file (and the reader it
    // holds) until the kernel releases it.
    s.blob_file.reset();
    s.reader.reset();
    s.graduated = true;
    LogInfo("layer now served from its local copy",
            {{"layer", s.layer_id}, {"target", s.target}, {"backend", "erofs"}});
  }

  const ErofsOptions options_;
  const FuseOptions fuse_;
  GraduatedStore store_;

  std::mutex blobs_mu_;
  std::unique_ptr<BlobFs> blobs_;

  std::atomic<bool> cancel_{false};
  std::mutex mu_;  // guards watched_, stopping_, thread_ start
  std::condition_variable cv_;
  std::vector<std::weak_ptr<LayerState>> watched_;
  bool stopping_ = false;
  std::thread thread_;
  struct Failure {
    std::chrono::steady_clock::time_point at;
    bool permanent = false;
  };
  std::map<std::string, Failure> failed_;  // by layer id; graduation thread only
};

void ErofsMountedLayer::StartBackground() {
  std::shared_ptr<LayerReader> reader;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->graduated || state_->reader == nullptr || state_->background) return;
    state_->background = true;
    reader = state_->reader;
  }
  reader->StartBackground();
  backend_->Watch(state_);
}

}  // namespace

std::unique_ptr<LayerMountBackend> NewErofsBackend(const ErofsOptions& erofs,
                                                   const FuseOptions& fuse) {
  return std::make_unique<ErofsBackend>(erofs, fuse);
}

}  // namespace lazypull::mount
