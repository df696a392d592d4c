#include "mount/erofs/erofs_backend.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/format/gzip_spans.h"
#include "fmt/format.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/copy_blob_map.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/graduated_store.h"
#include "mount/erofs/graduation.h"
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
  absl::Status Unmount() override;
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
        store_(erofs.dir + "/graduated", support.small_blocks),
        graduation_(std::make_unique<erofs::Graduation>(&store_, support, attach_,
                                                        erofs.graduation_check)) {
    // Loop devices of a daemon that died are autoclear: they go with their mounts. Any left
    // bound anyway (a kernel or tool that cleared the flag) go now, or with their mount.
    if (size_t stale = erofs::DetachStaleLoopDevices(attach_.loop_owner); stale > 0) {
      LogInfo("loop devices of a previous daemon found", {{"count", stale}});
    }
  }

  ~ErofsBackend() override {
    graduation_.reset();  // cancels a graduation in progress; its switches touch blob files
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
          MountGraduated(request.layer_id, request.target_dir, request.mount_id, &request);
      if (local.ok() || local.status().code() != absl::StatusCode::kNotFound) return local;
    }
    return MountLazy(request, erofs::StableBlobIno(request.mount_id, epoch));
  }

  absl::StatusOr<std::unique_ptr<MountedLayer>> MountLocal(const std::string& layer_id,
                                                           const std::string& target_dir,
                                                           std::string_view,
                                                           uint64_t mount_id) override {
    if (!options_.graduation) return absl::NotFoundError("graduation is off");
    // Without a local copy the caller mounts the layer lazily: a lazy mount of a previous
    // daemon at the target must stay for Mount to take back.
    if (!store_.Find(layer_id)) return absl::NotFoundError("layer " + layer_id + " is not local");
    if (absl::Status s = DetachOldMount(target_dir); !s.ok()) return s;
    return MountGraduated(layer_id, target_dir, mount_id, nullptr);
  }

  // Called with the layer's last snapshot gone. A graduation of the layer in progress is
  // cancelled; one about to publish either published already (its copy is deleted here) or
  // sees the cancellation under the graduation's lock and discards its copy: no copy outlives
  // the release.
  void DropLocal(const std::string& layer_id) override { graduation_->Drop(layer_id); }

  void DropLocalExcept(const std::set<std::string>& keep) override {
    std::vector<std::string> removed =
        graduation_->DropAllBut(options_.graduation ? keep : std::set<std::string>());
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
    if (options_.graduation) graduation_->Watch(std::move(state));
  }

  // A mount of `mount_id` goes (its snapshot is removed, or it is replaced): blob files of its
  // old lazy mounts that outlived a graduation are not served any more, and no later request
  // resolves them (see ResolveOldBlob).
  void ForgetMount(uint64_t mount_id) {
    if (mount_id == 0) return;
    {
      std::lock_guard<std::mutex> lock(local_mu_);
      auto it = local_mounts_.find(mount_id);
      // Another mount of the snapshot (one that replaced this handle) still serves them.
      if (it != local_mounts_.end() && --it->second.mounts > 0) return;
      if (it != local_mounts_.end()) local_mounts_.erase(it);
    }
    std::lock_guard<std::mutex> lock(blobs_mu_);
    if (blobs_ == nullptr) return;
    const uint64_t first = erofs::StableBlobIno(mount_id, 0);
    if (first == 0) return;
    if (size_t n = blobs_->Revoke(first, first | 0xff); n > 0) {
      LogInfo("released old lazy blobs of a graduated layer",
              {{"mount_id", mount_id}, {"files", n}});
    }
  }

 private:
  // Mounts the local copy of `layer_id` if there is one (NotFound otherwise).
  absl::StatusOr<std::unique_ptr<MountedLayer>> MountGraduated(const std::string& layer_id,
                                                               const std::string& target,
                                                               uint64_t mount_id,
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
    state->mount_id = mount_id;
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
    ServeOldBlobs(mount_id, layer_id);
    return std::unique_ptr<MountedLayer>(new ErofsMountedLayer(this, std::move(state)));
  }

  // Issue 20: a lazy mount of `mount_id` that outlived its layer's graduation (an overlay of a
  // container started before it keeps it) reads a blob file of the blob file system. When a
  // FUSE holder kept that file system for this daemon, it is adopted now, also with no lazy
  // layer left, and the old blob is served from the local copy from now on (ResolveOldBlob).
  void ServeOldBlobs(uint64_t mount_id, const std::string& layer_id) {
    if (mount_id == 0 || erofs::StableBlobIno(mount_id, 0) == 0) return;
    {
      std::lock_guard<std::mutex> lock(local_mu_);
      LocalMount& m = local_mounts_[mount_id];
      m.layer_id = layer_id;
      ++m.mounts;
    }
    bool held = false;
    {
      std::lock_guard<std::mutex> lock(blobs_mu_);
      if (blobs_ != nullptr) {
        blobs_->Wake();  // requests waiting for that blob ask again
        return;
      }
      held = fuse_.holder != nullptr && !blobs_handed_over_ &&
             fuse_.holder->Get(options_.dir + "/blobs").ok();
    }
    if (!held) return;
    absl::StatusOr<BlobFs*> blobs = Blobs();
    if (!blobs.ok()) {
      LogWarn("cannot adopt the blob file system; old lazy mounts of graduated layers fail",
              {{"dir", options_.dir + "/blobs"}, {"error", blobs.status().ToString()}});
    }
  }

  // The source of blob file `ino` of the adopted blob file system when it belongs to an old lazy
  // mount of a layer mounted from its local copy now: the copy's data file read through the
  // copy's blob map. Its inode number names the mount (StableBlobIno), so the answer depends on
  // nothing but the snapshot and the copy. Null otherwise (the file is someone else's, or the
  // copy has no map: an older copy).
  std::shared_ptr<erofs::BlobSource> ResolveOldBlob(uint64_t ino) {
    std::string layer_id;
    {
      std::lock_guard<std::mutex> lock(local_mu_);
      auto it = local_mounts_.find(erofs::MountIdOfBlobIno(ino));
      if (it == local_mounts_.end()) return nullptr;
      layer_id = it->second.layer_id;
    }
    std::optional<GraduatedLayer> local = store_.Find(layer_id);
    if (!local) return nullptr;
    absl::StatusOr<erofs::CopyBlobMap> map = erofs::ReadCopyBlobMap(local->dir);
    if (!map.ok()) {
      LogWarn("an old lazy mount of a graduated layer cannot read its local copy",
              {{"layer", layer_id}, {"ino", ino}, {"error", map.status().ToString()}});
      return nullptr;
    }
    UniqueFd data(::open(local->data.c_str(), O_RDONLY | O_CLOEXEC));
    if (!data.valid()) {
      LogWarn("an old lazy mount of a graduated layer cannot read its local copy",
              {{"layer", layer_id}, {"file", local->data}, {"error", strerror(errno)}});
      return nullptr;
    }
    LogInfo("old lazy mount of a graduated layer served from its local copy",
            {{"layer", layer_id}, {"ino", ino}, {"blob_bytes", map->blob_size}});
    return std::make_shared<erofs::CopyBlobSource>(layer_id, std::move(data), std::move(*map));
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
      o.resolve = [this](uint64_t ino) { return ResolveOldBlob(ino); };
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
    state->mount_id = request.mount_id;
    state->origin = request.origin;
    state->fingerprint = old.fingerprint;
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
    graduation_->AddLazy(state);
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
    state->mount_id = request.mount_id;
    state->origin = request.origin;
    state->fingerprint = fingerprint;
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
    graduation_->AddLazy(state);
    return std::unique_ptr<MountedLayer>(new ErofsMountedLayer(this, std::move(state)));
  }

  const ErofsOptions options_;
  const FuseOptions fuse_;
  const erofs::ErofsSupport support_;
  const erofs::ErofsAttachment attach_;
  GraduatedStore store_;

  std::mutex blobs_mu_;
  std::unique_ptr<BlobFs> blobs_;
  bool blobs_handed_over_ = false;  // guarded by blobs_mu_

  std::unique_ptr<erofs::Graduation> graduation_;  // reset first in the destructor

  // Mounts of local copies by mount id (their layer): a blob file of an old lazy mount of
  // theirs that the adopted blob file system still serves comes from the copy.
  struct LocalMount {
    std::string layer_id;
    int mounts = 0;  // live handles (a re-mount of the snapshot replaces one after the fact)
  };
  std::mutex local_mu_;
  std::map<uint64_t, LocalMount> local_mounts_;
};

absl::Status ErofsMountedLayer::Unmount() {
  uint64_t forget = 0;
  absl::Status s;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->kmount == nullptr) return absl::OkStatus();
    // Blob reads blocked on a stalled registry must not hold the unmount: cancel them.
    if (state_->reader != nullptr) state_->reader->Stop();
    s = state_->kmount->Unmount();
    state_->kmount.reset();
    if (state_->blob_file != nullptr) state_->last_resent = state_->blob_file->resent_requests();
    state_->blob_file.reset();
    state_->source.reset();
    if (state_->reader != nullptr) state_->last_stats = state_->reader->Stats();
    state_->reader.reset();
    forget = state_->mount_id;
    LogInfo("lazy layer unmounted", {{"layer", state_->layer_id}, {"target", state_->target}});
  }
  // Old lazy mounts of the snapshot (outlived a graduation) go with it.
  backend_->ForgetMount(forget);
  return s;
}

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
