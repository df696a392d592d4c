#include "mount/erofs/erofs_backend.h"

#include <fcntl.h>
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
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "base/background_guard.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/format/gzip_spans.h"
#include "fmt/format.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/graduated_store.h"
#include "mount/erofs/image_writer.h"
#include "mount/erofs/kernel_mount.h"
#include "mount/erofs/layer_state.h"
#include "mount/erofs/lazy_blob.h"
#include "mount/erofs/lazy_mount_identity.h"
#include "mount/erofs/loop_device.h"
#include "mount/erofs/soci_tar.h"
#include "mount/fuse/stale_mounts.h"

namespace lazypull::mount {
namespace {

using erofs::BlobFs;
using erofs::GraduatedLayer;
using erofs::GraduatedStore;
using erofs::KernelErofsMount;
using erofs::LayerState;

constexpr auto kRetryFailedGraduation = std::chrono::minutes(10);
constexpr int kMaxGraduationAttempts = 2;

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
    if (state_->blob_file != nullptr) state_->last_resent = state_->blob_file->resent_requests();
    state_->blob_file.reset();
    state_->source.reset();
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
    s.graduation = state_->graduation;
    s.attach = state_->attach;
    s.adopted = state_->adopted;
    s.resent_requests =
        state_->blob_file != nullptr ? state_->blob_file->resent_requests() : state_->last_resent;
    s.reader = state_->reader != nullptr ? state_->reader->Stats() : state_->last_stats;
    return s;
  }
  absl::Status HandOver() override;

 private:
  ErofsBackend* backend_;
  std::shared_ptr<LayerState> state_;
};

class ErofsBackend : public LayerMountBackend {
 public:
  ErofsBackend(const ErofsOptions& erofs, const FuseOptions& fuse,
               const erofs::ErofsSupport& support)
      : options_(erofs),
        fuse_(fuse),
        support_(support),
        attach_{.loop = support.attach == ErofsAttach::kLoop,
                .loop_owner = erofs::LoopOwnerTag(erofs.dir)},
        store_(erofs.dir + "/graduated", support.small_blocks) {
    // Loop devices of a daemon that died are autoclear: they go with their mounts. Any left
    // bound anyway (a kernel or tool that cleared the flag) go now, or with their mount.
    if (size_t stale = erofs::DetachStaleLoopDevices(attach_.loop_owner); stale > 0) {
      LogInfo("loop devices of a previous daemon found", {{"count", stale}});
    }
  }

  ~ErofsBackend() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      job_cancel_ = true;  // a graduation in progress gives up instead of delaying shutdown
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    // Lazy mounts still alive (detached, in use) lose their data path now, as FUSE mounts do.
    std::lock_guard<std::mutex> lock(blobs_mu_);
    blobs_.reset();
  }

  std::string_view name() const override { return "erofs"; }
  const char* attach_name() const { return attach_.loop ? "loop" : "file"; }

  absl::StatusOr<std::unique_ptr<MountedLayer>> Mount(const LayerMountRequest& request) override {
    if (!request.reader || request.target_dir.empty() || request.target_dir[0] != '/') {
      return absl::InvalidArgumentError(
          fmt::format("layer {}: a mount needs a reader and an absolute target (got \"{}\")",
                      request.layer_id, request.target_dir));
    }
    // A lazy mount of this snapshot that a previous daemon left (issue 20): take it back.
    std::optional<erofs::ExistingLazyMount> old = erofs::FindExistingLazyMount(
        request.target_dir, options_.dir + "/images", SafeName(request.layer_id));
    uint8_t epoch = 0;
    if (old.has_value() && erofs::MountIdOfBlobIno(old->ino) == request.mount_id &&
        request.mount_id != 0) {
      absl::StatusOr<std::unique_ptr<MountedLayer>> taken = Reattach(request, *old);
      if (taken.ok() || taken.status().code() != absl::StatusCode::kNotFound) return taken;
      LogInfo("cannot take back the previous daemon's lazy mount; mounting again",
              {{"layer", request.layer_id},
               {"target", request.target_dir},
               {"reason", std::string(taken.status().message())}});
      // The old mount may live on, detached, in a running container: a new blob must not
      // share its inode number (the kernel would read it with the old layout).
      epoch = static_cast<uint8_t>(erofs::EpochOfBlobIno(old->ino) + 1);
    }
    if (absl::Status s = DetachOldMount(request.target_dir); !s.ok()) return s;
    if (options_.graduation) {
      absl::StatusOr<std::unique_ptr<MountedLayer>> local =
          MountGraduated(request.layer_id, request.target_dir, &request);
      if (local.ok() || local.status().code() != absl::StatusCode::kNotFound) return local;
    }
    return MountLazy(request, erofs::StableBlobIno(request.mount_id, epoch));
  }

  absl::StatusOr<std::unique_ptr<MountedLayer>> MountLocal(const std::string& layer_id,
                                                           const std::string& target_dir,
                                                           std::string_view) override {
    if (!options_.graduation) return absl::NotFoundError("graduation is off");
    // Without a local copy the caller mounts the layer lazily: a lazy mount of a previous
    // daemon at the target must stay for Mount to take back.
    if (!store_.Find(layer_id)) return absl::NotFoundError("layer " + layer_id + " is not local");
    if (absl::Status s = DetachOldMount(target_dir); !s.ok()) return s;
    return MountGraduated(layer_id, target_dir, nullptr);
  }

  // Called with the layer's last snapshot gone. A graduation of the layer in progress is
  // cancelled; one about to publish either published already (its copy is deleted here) or
  // sees the cancellation under mu_ and discards its copy: no copy outlives the release.
  void DropLocal(const std::string& layer_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (graduating_ == layer_id) job_cancel_ = true;
    release_pending_.erase(layer_id);
    if (absl::Status s = store_.Remove(layer_id); !s.ok()) {
      LogWarn("cannot delete a graduated layer", {{"layer", layer_id}, {"error", s.ToString()}});
    }
  }

  void DropLocalExcept(const std::set<std::string>& keep) override {
    std::vector<std::string> removed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!graduating_.empty() && keep.count(graduating_) == 0) job_cancel_ = true;
      removed = store_.RemoveAllBut(options_.graduation ? keep : std::set<std::string>());
    }
    if (!removed.empty()) {
      LogInfo("deleted graduated layers no snapshot uses",
              {{"count", removed.size()}, {"dirs", removed}});
    }
  }

  uint64_t LocalBytes() const override { return store_.DiskBytes(); }

  void HandOverShared() override {
    std::lock_guard<std::mutex> lock(blobs_mu_);
    if (blobs_ == nullptr || fuse_.holder == nullptr || blobs_handed_over_) return;
    // Only a connection the holder keeps can be left (else Detach unmounts it).
    if (!fuse_.holder->Get(blobs_->dir()).ok()) return;
    if (absl::Status s = blobs_->Detach(); !s.ok()) {
      LogWarn("blob file system handover incomplete; the successor gets the rest resent",
              {{"dir", blobs_->dir()}, {"error", s.ToString()}});
    }
    blobs_handed_over_ = true;
    LogInfo("blob file system left to the holder", {{"dir", blobs_->dir()}});
  }

  bool blobs_handed_over() {
    std::lock_guard<std::mutex> lock(blobs_mu_);
    return blobs_handed_over_;
  }

  std::set<std::string> FinishRestore() override {
    std::lock_guard<std::mutex> lock(blobs_mu_);
    if (blobs_ == nullptr) return {};
    blobs_->Settle();
    return {blobs_->dir()};
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
        KernelErofsMount::Mount(local->image, local->data, target, attach_);
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
    state->graduation = "done";
    state->attach = attach_name();
    if (request != nullptr) state->last_stats = request->reader->Stats();
    LogInfo("lazy layer mounted", {{"layer", layer_id},
                                   {"target", target},
                                   {"backend", "erofs"},
                                   {"attach", attach_name()},
                                   {"graduated", true}});
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
      // Images are unlinked once mounted: any file here was left by a crashed daemon.
      for (const auto& e : std::filesystem::directory_iterator(options_.dir + "/images", ec)) {
        std::filesystem::remove_all(e.path(), ec);
      }
      erofs::BlobFsOptions o;
      o.max_threads = fuse_.max_threads;
      o.max_read = fuse_.max_read;
      o.unmount_timeout = fuse_.unmount_timeout;
      o.op_observer = fuse_.op_observer;
      o.holder = fuse_.holder.get();
      absl::StatusOr<std::unique_ptr<BlobFs>> fs = BlobFs::Mount(options_.dir + "/blobs", o);
      if (!fs.ok()) return fs.status();
      blobs_ = std::move(*fs);
    }
    return blobs_.get();
  }

  // The lazy blob's layout: a SOCI layer's uncompressed tar when the kernel mounts 512-byte
  // blocks (its graduated copy is then that very tar, in the same layout), else the blob layout
  // (4 KiB blocks; also for a SOCI layer whose zTOC places files where the tar layout cannot).
  absl::StatusOr<erofs::BlobLayout> PlanLazyLayout(const std::string& layer_id,
                                                   const format::LayerIndex& index,
                                                   bool* tar_layout) {
    const format::GzipSpans* spans = format::GzipSpansOf(index);
    if (spans != nullptr && support_.small_blocks) {
      absl::StatusOr<std::vector<uint64_t>> payloads = erofs::SociTarPayloads(index);
      absl::StatusOr<erofs::BlobLayout> tar =
          payloads.ok() ? erofs::PlanTarBlobLayout(index, *payloads, spans->uncompressed_size())
                        : absl::StatusOr<erofs::BlobLayout>(payloads.status());
      if (tar.ok()) {
        *tar_layout = true;
        return tar;
      }
      LogWarn("a SOCI layer's files cannot be laid out at their tar offsets; using the blob layout",
              {{"layer", layer_id}, {"error", tar.status().ToString()}});
    }
    return erofs::PlanBlobLayout(index, 12);
  }

  // Takes back the lazy mount `old` of a previous daemon at request.target_dir: its blob file
  // (the same inode number, in the blob file system adopted from the holder) is served by
  // request.reader again; the kernel mount stays. NotFound when it cannot be (the blob file
  // system was mounted afresh, or this build lays the blob out differently).
  absl::StatusOr<std::unique_ptr<MountedLayer>> Reattach(const LayerMountRequest& request,
                                                         const erofs::ExistingLazyMount& old) {
    absl::StatusOr<BlobFs*> blobs = Blobs();
    if (!blobs.ok()) return blobs.status();
    if (!(*blobs)->adopted()) {
      return absl::NotFoundError("the blob file system was not kept by a FUSE holder");
    }
    bool tar_layout = false;
    absl::StatusOr<erofs::BlobLayout> layout =
        PlanLazyLayout(request.layer_id, request.reader->index(), &tar_layout);
    if (!layout.ok()) return layout.status();
    if (erofs::LayoutFingerprint(*layout) != old.fingerprint) {
      return absl::NotFoundError("the mounted image expects another blob layout");
    }
    auto shared_layout = std::make_shared<const erofs::BlobLayout>(std::move(*layout));
    auto source = std::make_shared<erofs::LazyBlobSource>(request.reader, shared_layout);
    std::unique_ptr<BlobFs::File> file =
        (*blobs)->Add(SafeName(request.layer_id), source, {.ino = old.ino, .reattach = true});
    if (file->ino() != old.ino) return absl::NotFoundError("its blob file number is in use");
    auto state = std::make_shared<LayerState>();
    state->layer_id = request.layer_id;
    state->target = request.target_dir;
    state->origin = request.origin;
    state->kmount = KernelErofsMount::Adopt(request.target_dir);
    state->blob_file = std::move(file);
    state->source = std::move(source);
    state->reader = request.reader;
    state->tar_layout = tar_layout;
    // Loop devices are autoclear: they go with the mount.
    state->attach = old.loop ? "loop" : "file";
    state->adopted = true;
    if (options_.graduation && request.origin.valid()) state->graduation = "pending";
    LogInfo("lazy layer adopted", {{"layer", request.layer_id},
                                   {"target", request.target_dir},
                                   {"backend", "erofs"},
                                   {"attach", state->attach},
                                   {"blob", state->blob_file->path()}});
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::erase_if(lazy_, [](const std::weak_ptr<LayerState>& w) { return w.expired(); });
      lazy_.push_back(state);
    }
    return std::unique_ptr<MountedLayer>(new ErofsMountedLayer(this, std::move(state)));
  }

  // `ino`: the blob's stable inode number (StableBlobIno), or 0.
  absl::StatusOr<std::unique_ptr<MountedLayer>> MountLazy(const LayerMountRequest& request,
                                                          uint64_t ino) {
    absl::StatusOr<BlobFs*> blobs = Blobs();
    if (!blobs.ok()) return blobs.status();
    const format::LayerIndex& index = request.reader->index();
    bool tar_layout = false;
    absl::StatusOr<erofs::BlobLayout> layout = PlanLazyLayout(request.layer_id, index, &tar_layout);
    if (!layout.ok()) return layout.status();
    const std::string fingerprint = erofs::LayoutFingerprint(*layout);
    auto shared_layout = std::make_shared<const erofs::BlobLayout>(std::move(*layout));
    auto source = std::make_shared<erofs::LazyBlobSource>(request.reader, shared_layout);
    std::unique_ptr<BlobFs::File> file =
        (*blobs)->Add(SafeName(request.layer_id), source, {.ino = ino});
    const std::string image =
        erofs::LazyImagePath(options_.dir + "/images", file->name(), fingerprint);
    erofs::ImageOptions image_options;
    image_options.device_tag = file->path();
    image_options.uuid = UuidOf(request.layer_id);
    if (absl::Status s = erofs::WriteErofsImage(index, shared_layout->device, image_options, image);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::unique_ptr<KernelErofsMount>> m =
        KernelErofsMount::Mount(image, file->path(), request.target_dir, attach_);
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
    state->source = std::move(source);
    state->reader = request.reader;
    state->tar_layout = tar_layout;
    state->attach = attach_name();
    if (options_.graduation && request.origin.valid()) state->graduation = "pending";
    LogInfo("lazy layer mounted", {{"layer", request.layer_id},
                                   {"target", request.target_dir},
                                   {"backend", "erofs"},
                                   {"attach", attach_name()},
                                   {"blob", state->blob_file->path()},
                                   {"blob_bytes", shared_layout->size},
                                   {"layout", tar_layout ? "tar" : "blob"}});
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::erase_if(lazy_, [](const std::weak_ptr<LayerState>& w) { return w.expired(); });
      lazy_.push_back(state);
    }
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
        Graduate(layer_id, ready, states);
        if (job_cancel_) return;
      }
      std::optional<GraduatedLayer> local = store_.Find(layer_id);
      if (!local) continue;
      std::vector<uint64_t> payloads;
      if (auto it = payloads_.find(layer_id); it != payloads_.end()) payloads = it->second;
      for (const auto& s : states) {
        if (support_.mount_beneath) {
          Switch(*s, *local, payloads);
        } else {
          ReadFromCopy(*s, *local, payloads);
        }
      }
    }
    ReleaseGraduatedChunks();
  }

  // One graduation job: builds the copy, publishes it unless the layer was released meanwhile,
  // records a failure (persisted; a layer that failed kMaxGraduationAttempts times is not
  // tried again, also after a restart).
  void Graduate(const std::string& layer_id, const std::shared_ptr<LayerState>& ready,
                const std::vector<std::shared_ptr<LayerState>>& states) {
    auto set_all = [&](const std::string& g) {
      for (const auto& s : states) s->SetGraduation(g);
    };
    const int failures = store_.Failures(layer_id);
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
    {
      std::lock_guard<std::mutex> lock(ready->mu);
      reader = ready->reader;
      origin = ready->origin;
    }
    if (reader == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || !ready->Lazy()) return;  // shutting down, or released meanwhile
      graduating_ = layer_id;
      job_cancel_ = false;
    }
    set_all("running");
    LogInfo("graduating layer", {{"layer", layer_id}});
    absl::StatusOr<std::unique_ptr<GraduatedStore::PendingCopy>> built =
        RunGuarded("graduation", {{"layer", layer_id}},
                   [&]() -> absl::StatusOr<std::unique_ptr<GraduatedStore::PendingCopy>> {
                     if (absl::Status s = CheckBudget(reader->index(), origin); !s.ok()) return s;
                     return store_.Build(layer_id, *reader, origin, job_cancel_);
                   });
    absl::Status published = built.status();
    bool cancelled = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled = job_cancel_;
      if (published.ok()) {
        published =
            cancelled ? absl::CancelledError("the layer was released") : store_.Publish(**built);
      }
      graduating_.clear();
    }
    erofs::GraduationStats g;
    std::vector<uint64_t> tar_payloads;
    if (built.ok()) {
      g = (*built)->stats();
      tar_payloads = (*built)->tar_payloads();
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
      if (absl::Status s = store_.SetFailures(layer_id, attempts); !s.ok()) {
        LogWarn("cannot record a failed graduation",
                {{"layer", layer_id}, {"error", s.ToString()}});
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
    payloads_[layer_id] = std::move(tar_payloads);
    origin.cache->SetExternalBytes(store_.DiskBytes());
    std::lock_guard<std::mutex> lock(mu_);
    release_pending_[layer_id] = PendingRelease{reader, origin.cache};
  }

  // The copy of a layer must fit the cache budget by itself (its chunks are released after).
  static absl::Status CheckBudget(const format::LayerIndex& index, const LayerOrigin& origin) {
    uint64_t data = 0;
    for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
      for (const format::Chunk& c : index.Chunks(ino)) {
        if (c.compression != format::ChunkCompression::kZeros) data += c.length;
      }
    }
    const uint64_t budget = origin.cache->config().max_bytes;
    if (data > budget) {
      return absl::ResourceExhaustedError(
          fmt::format("the layer's {} data bytes exceed the cache budget (cache.max_bytes = {})",
                      data, budget));
    }
    return absl::OkStatus();
  }

  // Releases from the chunk cache the chunks of graduated layers whose lazy mounts have all
  // switched (they read the copy now), except chunks another lazy layer of this backend uses.
  // Layers mounted by another backend of the daemon are not seen: a chunk they share may be
  // fetched again.
  void ReleaseGraduatedChunks() {
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

  // How a lazy mount's blob file reads the local copy `local` (LazyBlobSource::UseLocalCopy):
  // empty = the same layout as its blob; payload offsets of a tar copy; nullopt = it cannot (a
  // tar copy built by an earlier process has no payload map here, unless the lazy blob is the
  // tar itself; a blob copy of a tar-layout blob), so it keeps reading chunks. Caller holds s.mu.
  static std::optional<std::vector<uint64_t>> LocalCopyMap(const LayerState& s,
                                                           const GraduatedLayer& local,
                                                           const std::vector<uint64_t>& payloads) {
    if (local.method == "tar") {
      if (s.tar_layout) return std::vector<uint64_t>();
      if (payloads.empty()) return std::nullopt;
      return payloads;
    }
    if (s.tar_layout) return std::nullopt;
    return std::vector<uint64_t>();
  }

  // Replaces a lazy mount by the local copy in place.
  void Switch(LayerState& s, const GraduatedLayer& local, const std::vector<uint64_t>& payloads) {
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
    std::optional<std::vector<uint64_t>> map = LocalCopyMap(s, local, payloads);
    if (s.source != nullptr && map) {
      auto fd = std::make_shared<UniqueFd>(::open(local.data.c_str(), O_RDONLY | O_CLOEXEC));
      if (fd->valid()) s.source->UseLocalCopy(std::move(fd), std::move(*map));
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
  void ReadFromCopy(LayerState& s, const GraduatedLayer& local,
                    const std::vector<uint64_t>& payloads) {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.ReadsChunks() || s.source == nullptr) return;
    // A tar copy built by an earlier process has no payload map here: keep reading chunks.
    std::optional<std::vector<uint64_t>> map = LocalCopyMap(s, local, payloads);
    if (!map) return;
    auto fd = std::make_shared<UniqueFd>(::open(local.data.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd->valid()) {
      LogWarn("cannot open a graduated layer's copy; the mount keeps reading chunks",
              {{"layer", s.layer_id}, {"file", local.data}, {"error", strerror(errno)}});
      return;
    }
    s.source->UseLocalCopy(std::move(fd), std::move(*map));
    s.reads_local = true;
    s.graduation = "done";
    LogInfo("layer graduated; this mount stays lazy and reads the local copy",
            {{"layer", s.layer_id},
             {"target", s.target},
             {"reason", "no MOVE_MOUNT_BENEATH: new mounts of the layer use the local copy"}});
  }

  const ErofsOptions options_;
  const FuseOptions fuse_;
  const erofs::ErofsSupport support_;
  const erofs::ErofsAttachment attach_;
  GraduatedStore store_;

  std::mutex blobs_mu_;
  std::unique_ptr<BlobFs> blobs_;
  bool blobs_handed_over_ = false;  // guarded by blobs_mu_

  std::mutex mu_;  // guards the members below, and a publish against DropLocal
  std::condition_variable cv_;
  std::vector<std::weak_ptr<LayerState>> watched_;
  std::vector<std::weak_ptr<LayerState>> lazy_;  // every lazy mount (chunk release)
  bool stopping_ = false;
  std::thread thread_;
  std::string graduating_;               // the layer a graduation job builds now, or ""
  std::atomic<bool> job_cancel_{false};  // set under mu_: the job's layer released, or stopping
  struct PendingRelease {
    std::shared_ptr<LayerReader> reader;  // keeps the index
    ChunkCache* cache = nullptr;
  };
  std::map<std::string, PendingRelease> release_pending_;  // by layer id
  // Graduation thread only:
  std::map<std::string, std::chrono::steady_clock::time_point> failed_;  // last failure
  std::set<std::string> given_up_;                                       // logged once
  std::map<std::string, std::vector<uint64_t>> payloads_;  // tar copies built by this process
};

absl::Status ErofsMountedLayer::HandOver() {
  // The blob file system was left to the holder first (HandOverShared): the kernel mount stays
  // for the successor, which takes it back. Else, and for a local copy, as Unmount.
  if (!backend_->blobs_handed_over()) return Unmount();
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->kmount == nullptr) return absl::OkStatus();
  if (state_->graduated) {
    absl::Status s = state_->kmount->Unmount();
    state_->kmount.reset();
    return s;
  }
  state_->kmount->Release();  // its loop devices (autoclear) stay with the mount
  state_->kmount.reset();
  LogInfo("lazy layer handed over",
          {{"layer", state_->layer_id}, {"target", state_->target}, {"backend", "erofs"}});
  return absl::OkStatus();
}

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

void DropUnusedErofsCopies(const ErofsOptions& erofs, const std::set<std::string>& keep) {
  GraduatedStore store(erofs.dir + "/graduated");
  std::vector<std::string> removed =
      store.RemoveAllBut(erofs.graduation ? keep : std::set<std::string>());
  if (!removed.empty()) {
    LogInfo("deleted graduated layers no snapshot uses",
            {{"count", removed.size()}, {"dirs", removed}});
  }
}

std::unique_ptr<LayerMountBackend> NewErofsBackend(const ErofsOptions& erofs,
                                                   const FuseOptions& fuse,
                                                   const erofs::ErofsSupport& support) {
  return std::make_unique<ErofsBackend>(erofs, fuse, support);
}

}  // namespace lazypull::mount
