// LayerMountBackend: presents one lazy layer (a LayerIndex plus its LayerReader) as a
// read-only directory tree at a target directory, in the overlayfs view (whiteouts as char
// 0:0, opaque directories with the overlay opaque xattrs), so the layer can be a lowerdir.
//
// Backends: FUSE (mount/fuse/) now; the EROFS kernel backend plugs in later. The backend is
// chosen by `[mount] backend` (see mount_config.h): "fuse", "erofs" or "auto" (= fuse until
// EROFS lands).
//
// Typical use by the snapshotter:
//   auto backend = NewLayerMountBackend(config);              // once per daemon
//   auto reader = LayerReader::Create(id, index, blob, cache, config.reader);
//   auto mounted = (*backend)->Mount({id, std::move(*reader), dir});
//   (*mounted)->StartBackground();  // prefetch + background fetch, as configured
//   ... (*mounted)->Status().ToJson() ...
//   mounted->reset();                // unmounts
#ifndef LAZYPULL_MOUNT_BACKEND_H_
#define LAZYPULL_MOUNT_BACKEND_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "mount/mount_config.h"
#include "nlohmann/json.hpp"

namespace lazypull::mount {

struct LayerMountRequest {
  // Names the layer in logs, status and the mount's fsname (e.g. the layer digest).
  std::string layer_id;
  // Data path of the layer; its index() is the tree that is mounted. Shared with the mount.
  std::shared_ptr<LayerReader> reader;
  // Existing directory to mount on. A stale FUSE mount left there by a crashed daemon is
  // detached first.
  std::string target_dir;
};

// Operator-visible state of one mounted layer. Value type.
struct LayerMountStatus {
  std::string layer_id;
  std::string backend;  // "fuse", ...
  std::string target;
  bool mounted = false;
  LayerReaderStats reader;
  // {"layer": ..., "backend": ..., "target": ..., "mounted": ..., "bytes_fetched": ...,
  //  "fetched_percent": ..., "cache_hits": ..., ...} (the reader's fields flattened in).
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
};

// The backend selected by config.backend: "fuse" and "auto" give FUSE; "erofs" is
// Unimplemented until the EROFS backend exists.
absl::StatusOr<std::unique_ptr<LayerMountBackend>> NewLayerMountBackend(const MountConfig& config);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_BACKEND_H_
