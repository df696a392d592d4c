// LayerMountBackend: presents one lazy layer (a LayerIndex plus its LayerReader) as a
// read-only directory tree at a target directory, in the overlayfs view (whiteouts as char
// 0:0, opaque directories with the overlay opaque xattrs), so the layer can be a lowerdir.
//
// Backends: FUSE (mount/fuse/) and EROFS (mount/erofs/: metadata in the kernel, data through
// one daemon-wide FUSE blob file while lazy, no FUSE at all once the layer has graduated to a
// local copy). The backend is chosen by `[mount] backend` (see mount_config.h): "fuse",
// "erofs" or "auto" (= erofs when the kernel can, else fuse), and per layer by
// LayerMountRequest::backend.
//
// Typical use by the snapshotter:
//   (a layer the backend already holds locally mounts without index or registry:
//    backend->MountLocal(id, dir, "", mount_id))
//   auto backend = NewLayerMountBackend(config);              // once per daemon
//   auto reader = LayerReader::Create(id, index, blob, cache, config.reader);
//   auto mounted = (*backend)->Mount({id, std::move(*reader), dir});
//   (*mounted)->StartBackground();  // prefetch + background fetch, as configured
//   ... (*mounted)->Status().ToJson() ...
//   mounted->reset();                // unmounts
#ifndef LAZYPULL_MOUNT_BACKEND_H_
#define LAZYPULL_MOUNT_BACKEND_H_

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "lazypull/digest.h"
#include "mount/erofs/erofs_probe.h"
#include "mount/mount_config.h"
#include "nlohmann/json.hpp"

namespace lazypull::mount {

// What EROFS graduation (a local copy of a fully fetched layer, erofs/graduated_store.h) needs
// besides the layer's reader. Without `cache` a layer never graduates. The functions may block
// on the network; they are called from a backend thread, possibly long after Mount returned,
// and may throw (the backend turns that into a failed graduation).
struct LayerOrigin {
  // sha256 of the uncompressed layer: the image config's rootfs.diff_ids entry. Optional: a
  // zstd:chunked layer is then kept as its original tar (checked against it).
  std::function<absl::StatusOr<Digest>()> diff_id;
  // The compressed blob itself (ranges of it), for the tar header frames of a zstd:chunked
  // tar copy. Optional.
  std::shared_ptr<BlobReader> blob;
  // The chunk cache holding the layer's chunks. Once the local copy holds them they are
  // released from it (chunks no other lazy layer of the backend uses), and the copies' disk
  // bytes count against its max_bytes. Must outlive the backend.
  ChunkCache* cache = nullptr;
  bool valid() const { return cache != nullptr; }
};

struct LayerMountRequest {
  // Names the layer in logs, status and the mount's fsname (e.g. the layer digest).
  std::string layer_id;
  // Data path of the layer; its index() is the tree that is mounted. Shared with the mount.
  std::shared_ptr<LayerReader> reader;
  // Existing directory to mount on. A stale FUSE mount left there by a crashed daemon is
  // detached first.
  std::string target_dir;
  // Backend for this layer: "" = the configured one; "fuse" or "erofs" (e.g. from the
  // containerd.io/snapshot/lazypull.backend label).
  std::string backend{};
  LayerOrigin origin{};
  // A number naming this mount across daemon restarts, unique among the daemon's mounts and
  // never reused (the snapshot id); 0 = none. With it, the EROFS backend takes back the lazy
  // mount a previous daemon left at target_dir instead of mounting again (issue 20).
  uint64_t mount_id = 0;
};

// Operator-visible state of one mounted layer. Value type.
struct LayerMountStatus {
  std::string layer_id;
  std::string backend;  // "fuse" or "erofs"
  std::string target;
  bool mounted = false;
  // EROFS: served from a local copy with no FUSE in the data path.
  bool graduated = false;
  // EROFS graduation of the layer: "" (none: FUSE, or no origin), "pending" (fetching),
  // "running", "failed" (retried once later unless it failed twice), "done".
  std::string graduation;
  // EROFS: how the images reach the kernel, "file" or "loop"; "" for FUSE.
  std::string attach;
  // The mount was taken over from a previous daemon through the FUSE holder (issue 20)
  // instead of being mounted afresh (FUSE: the layer's connection; EROFS: the kernel mount,
  // whose blob file the adopted blob file system serves again), and how many requests (for
  // this layer) the kernel resent to this daemon that the previous one had read but not
  // answered.
  bool adopted = false;
  uint64_t resent_requests = 0;
  // FUSE passthrough of fully local files: "" (EROFS), "off" (configured off, or the kernel
  // does not offer it), "unavailable" (offered, but this process may not register backing
  // files: the reason is logged) or "on"; and the opens answered in each mode.
  std::string passthrough;
  uint64_t passthrough_opens = 0;
  uint64_t cached_opens = 0;
  uint64_t backing_files = 0;  // backing files registered now (one per inode with open files)
  // Copies of multi-chunk files backing passthrough opens (charged to the chunk cache's
  // budget), their bytes, and opens answered in cached mode while their file's copy was
  // being assembled in the background.
  uint64_t passthrough_copies = 0;
  uint64_t passthrough_copy_bytes = 0;
  uint64_t deferred_opens = 0;
  LayerReaderStats reader;
  // {"layer": ..., "backend": ..., "target": ..., "mounted": ..., "bytes_fetched": ...,
  //  "graduated": ..., "attach": ... (EROFS), "adopted": ..., "resent_requests": ...,
  //  "passthrough", "passthrough_opens", "cached_opens", "backing_files",
  //  "passthrough_copies", "passthrough_copy_bytes", "deferred_opens" (FUSE),
  //  "fetched_percent": ..., "cache_hits": ..., ...}
  //  (the reader's fields flattened in).
  nlohmann::json ToJson() const;
};

// A mounted layer. Destruction unmounts (errors are logged). Thread-safe.
class MountedLayer {
 public:
  virtual ~MountedLayer() = default;
  virtual const std::string& target() const = 0;
  // Starts the reader's prefetch and background fetch (as configured in its options).
  virtual void StartBackground() = 0;
  // Unmounts now; idempotent. A mount still in use (e.g. by an overlay) is detached lazily
  // and its connection aborted after FuseOptions::unmount_timeout, so this never hangs;
  // readers of the detached tree then get ENOTCONN. Errors name the target.
  virtual absl::Status Unmount() = 0;
  // Graceful handover to a successor daemon (issue 20): stops serving without unmounting,
  // after the requests in progress were answered, when a FUSE holder keeps the mount's
  // connection; otherwise the same as Unmount. Idempotent; Unmount afterwards is a no-op.
  virtual absl::Status HandOver() { return Unmount(); }
  virtual LayerMountStatus Status() const = 0;
};

class LayerMountBackend {
 public:
  virtual ~LayerMountBackend() = default;
  virtual std::string_view name() const = 0;
  // Mounts request.reader->index() at request.target_dir. InvalidArgument for a bad request,
  // FailedPrecondition when the kernel refuses (no /dev/fuse, not root, ...), with the target
  // in the message. The returned handle must not outlive the backend.
  virtual absl::StatusOr<std::unique_ptr<MountedLayer>> Mount(const LayerMountRequest& request) = 0;
  // Mounts a layer that is fully local on this node (an EROFS-graduated layer) at `target_dir`
  // with neither its index nor the registry. `backend` and `mount_id` as in LayerMountRequest
  // (EROFS: an old lazy mount of `mount_id` that outlived the layer's graduation keeps reading
  // the local copy). NotFound when there is no local copy (the default).
  virtual absl::StatusOr<std::unique_ptr<MountedLayer>> MountLocal(const std::string& layer_id,
                                                                   const std::string& target_dir,
                                                                   std::string_view backend,
                                                                   uint64_t mount_id) {
    return absl::NotFoundError("no local copy of layer " + layer_id);
  }
  // Deletes the backend's local copy of `layer_id` (no snapshot uses the layer any more).
  // Mounts still using it keep their open files. Default: nothing to delete.
  virtual void DropLocal(const std::string& layer_id) {}
  // Deletes every local copy (and leftover) of a layer not in `keep` (layer ids): at start,
  // with the layers some snapshot still uses. Default: nothing to delete.
  virtual void DropLocalExcept(const std::set<std::string>& keep) {}
  // Graceful handover (issue 20), before the mounts' own HandOver: leaves what the backend
  // shares between mounts (the EROFS blob file system) to the FUSE holder for a successor,
  // after the requests in progress were answered. From then on no mount of the backend is
  // served. Without a holder that keeps it, nothing happens (the mounts' HandOver unmounts).
  virtual void HandOverShared() {}
  // After a restart, once every snapshot's layer was mounted again: requests of the previous
  // daemon's mounts that no layer took back fail from now on instead of waiting, and the
  // result is the FUSE holder keys the backend serves besides the layers' targets (the EROFS
  // blob file system's mount point), which the caller must not release. Default: none.
  virtual std::set<std::string> FinishRestore() { return {}; }
  // Bytes the backend's local copies occupy on disk. Default 0.
  virtual uint64_t LocalBytes() const { return 0; }
  // How layers are mounted, for status: {"backend": name(), ...} (EROFS adds ErofsSupport's
  // fields: "erofs_attach", "small_blocks", "mount_beneath").
  virtual nlohmann::json Describe() const { return {{"backend", std::string(name())}}; }
};

// Whether and how EROFS can serve lazy layers here (see erofs/erofs_probe.h): what works, or
// why not.
using ErofsProbe = std::function<absl::StatusOr<erofs::ErofsSupport>(const MountConfig&)>;

// The backend selected by config.backend. "fuse": FUSE only. "erofs": EROFS, or
// FailedPrecondition (with the probe's reason) when this kernel cannot. "auto": EROFS when
// `probe` passes, else FUSE with one log line saying why. EROFS attaches images as the probe
// found (config.erofs.attach; logged). A request's `backend` overrides the
// default per layer ("erofs" on a kernel without it fails that mount). `probe` null = the real
// probe.
absl::StatusOr<std::unique_ptr<LayerMountBackend>> NewLayerMountBackend(const MountConfig& config,
                                                                        ErofsProbe probe = nullptr);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_BACKEND_H_
