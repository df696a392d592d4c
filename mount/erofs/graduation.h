// Graduation: the EROFS backend's (erofs_backend.h) thread that turns fully fetched lazy layers
// into local copies and moves their mounts onto them.
//
// Every `check` interval it looks at the watched lazy layers (Watch: their background fetch
// runs); once a layer's reader reports every chunk local and the mount carried a LayerOrigin, it
// builds the layer's local copy from those local chunks (graduated_store.h: the lazy blob layout,
// or a zstd:chunked or SOCI layer's original tar verified against the diff_id), one layer at a
// time, with the map of the lazy blob into the copy (copy_blob_map.h), then replaces each of that
// layer's lazy mounts in place (KernelErofsMount::MountBeneath): containers started from then on
// get EROFS over a local file with no FUSE in the path; overlays already built on the lazy mount
// keep it, and its blob file reads the local copy through the map (so does a later daemon's blob
// file system: see ErofsBackend). Then the layer's chunks are released from the chunk cache
// (except chunks another lazy layer of the backend uses: AddLazy registers every lazy mount) and
// the copies' disk bytes are registered against the cache's max_bytes.
//
// Without MOVE_MOUNT_BENEATH (before 6.5) lazy mounts are not switched: they stay lazy, their
// blob files read the local copy (so the chunks still leave the cache), and only new mounts of
// the layer mount the copy (status: graduation "done", graduated false).
//
// Failures: a graduation job never takes the thread down (an exception is a logged, failed job).
// A failed layer stays lazy and is retried once after 10 minutes; after two failures (counted on
// disk) it is never tried again, also after a restart. A layer whose data alone exceeds the cache
// budget is not graduated. Drop (the layer's last snapshot is gone) cancels the layer's
// graduation: the job re-checks under the lock before publishing, so no copy outlives the
// release. Destruction cancels a graduation in progress and joins the thread.
//
// Thread-safety: all methods are thread-safe.
#ifndef LAZYPULL_MOUNT_EROFS_GRADUATION_H_
#define LAZYPULL_MOUNT_EROFS_GRADUATION_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mount/erofs/erofs_probe.h"
#include "mount/erofs/graduated_store.h"
#include "mount/erofs/kernel_mount.h"
#include "mount/erofs/layer_state.h"

namespace lazypull::mount::erofs {

class Graduation {
 public:
  // `store` must outlive this object. Nothing runs until the first Watch.
  Graduation(GraduatedStore* store, const ErofsSupport& support, ErofsAttachment attach,
             std::chrono::milliseconds check);
  ~Graduation();
  Graduation(const Graduation&) = delete;
  Graduation& operator=(const Graduation&) = delete;

  // Registers a lazy mount: its chunks stay in the cache while it reads them.
  void AddLazy(const std::shared_ptr<LayerState>& state);
  // Watches a lazy layer whose background fetch runs; starts the thread on first use.
  void Watch(const std::shared_ptr<LayerState>& state);
  // Deletes the local copy of `layer_id`, cancelling its graduation in progress (see above).
  void Drop(const std::string& layer_id);
  // Deletes every copy of a layer not in `keep`, cancelling a graduation of one; returns the
  // directories removed.
  std::vector<std::string> DropAllBut(const std::set<std::string>& keep);

 private:
  struct PendingRelease {
    std::shared_ptr<LayerReader> reader;  // keeps the index
    ChunkCache* cache = nullptr;
  };

  void Loop();
  void GraduateReady(const std::vector<std::shared_ptr<LayerState>>& live);
  void Graduate(const std::string& layer_id, const std::shared_ptr<LayerState>& ready,
                const std::vector<std::shared_ptr<LayerState>>& states);
  void ReleaseGraduatedChunks();
  void Switch(LayerState& s, const GraduatedLayer& local, const std::optional<CopyBlobMap>& map);
  void ReadFromCopy(LayerState& s, const GraduatedLayer& local,
                    const std::optional<CopyBlobMap>& map);

  GraduatedStore* const store_;
  const ErofsSupport support_;
  const ErofsAttachment attach_;
  const std::chrono::milliseconds check_;

  std::mutex mu_;  // guards the members below, and a publish against Drop
  std::condition_variable cv_;
  std::vector<std::weak_ptr<LayerState>> watched_;
  std::vector<std::weak_ptr<LayerState>> lazy_;  // every lazy mount (chunk release)
  bool stopping_ = false;
  std::thread thread_;
  std::string graduating_;               // the layer a graduation job builds now, or ""
  std::atomic<bool> job_cancel_{false};  // set under mu_: the job's layer released, or stopping
  std::map<std::string, PendingRelease> release_pending_;  // by layer id
  // The graduation thread's only:
  std::map<std::string, std::chrono::steady_clock::time_point> failed_;  // last failure
  std::set<std::string> given_up_;                                       // logged once
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_GRADUATION_H_
