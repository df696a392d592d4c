// LayerState: the state of one layer mounted by the EROFS backend (erofs_backend.h), lazy
// (EROFS over a blob file of the blob file system) until it graduates (EROFS over the local
// copy). Shared between the layer's MountedLayer handle and the backend's graduation thread.
//
// Thread-safety: every field is guarded by `mu`; the methods take it.
#ifndef LAZYPULL_MOUNT_EROFS_LAYER_STATE_H_
#define LAZYPULL_MOUNT_EROFS_LAYER_STATE_H_

#include <memory>
#include <mutex>
#include <string>

#include "fetcher/layer_reader/layer_reader.h"
#include "mount/backend.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/kernel_mount.h"
#include "mount/erofs/lazy_blob.h"

namespace lazypull::mount::erofs {

// One mounted layer: lazy (EROFS + blob file) until it graduates (EROFS over the local copy).
// Shared between the handle and the backend's graduation thread. Guarded by mu.
struct LayerState {
  std::mutex mu;
  std::string layer_id;
  std::string target;
  // LayerMountRequest::mount_id (0 = none): names the mount's blob files (StableBlobIno).
  uint64_t mount_id = 0;
  LayerOrigin origin;
  std::unique_ptr<KernelErofsMount> kmount;
  std::unique_ptr<BlobFs::File> blob_file;  // lazy only
  std::shared_ptr<LazyBlobSource> source;   // lazy only
  std::shared_ptr<LayerReader> reader;      // lazy only
  LayerReaderStats last_stats;              // once the reader is gone
  bool graduated = false;
  bool background = false;      // StartBackground was called
  bool switch_refused = false;  // a switch left a mount beneath: never again on this target
  bool reads_local = false;     // stays lazy, but its blob file reads the local copy
  bool tar_layout = false;      // the lazy blob is the layer's tar (SOCI): so is a "tar" copy
  std::string fingerprint;      // LayoutFingerprint of the lazy blob's layout (lazy only)
  std::string graduation;       // LayerMountStatus::graduation
  std::string attach;           // "file" or "loop"
  bool adopted = false;         // taken back from a previous daemon (issue 20)
  uint64_t last_resent = 0;     // resent requests of the blob file once it is gone

  // Whether the lazy layer's chunks are all local (its reader says so).
  bool FullyLocal() {
    std::lock_guard<std::mutex> lock(mu);
    if (graduated || kmount == nullptr || reader == nullptr || !background) return false;
    LayerReaderStats s = reader->Stats();
    return s.total_chunks == s.local_chunks;
  }
  // Whether it still serves a lazy mount.
  bool Lazy() {
    std::lock_guard<std::mutex> lock(mu);
    return !graduated && kmount != nullptr;
  }
  // Whether its reads still go through the reader (lazy, not reading a local copy). Caller
  // holds mu.
  bool ReadsChunks() const { return !graduated && kmount != nullptr && !reads_local; }
  void SetGraduation(const std::string& g) {
    std::lock_guard<std::mutex> lock(mu);
    if (!graduated) graduation = g;
  }
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_LAYER_STATE_H_
