// FsOpObserver: sees every FUSE request a lazypull file system answers (the per-layer FUSE
// file systems and the EROFS backend's blob file system), so an owner can count and time them
// (the daemon's Prometheus metrics) without the mount module knowing about metrics.
#ifndef LAZYPULL_MOUNT_OP_OBSERVER_H_
#define LAZYPULL_MOUNT_OP_OBSERVER_H_

#include <chrono>
#include <string_view>

namespace lazypull::mount {

// Values of `fs` in OnOp.
inline constexpr std::string_view kLayerFs = "layer";      // mount/fuse: one lazy layer
inline constexpr std::string_view kBlobFs = "erofs_blob";  // mount/erofs: the blob files

class FsOpObserver {
 public:
  virtual ~FsOpObserver() = default;
  // One FUSE request of kind `op` ("lookup", "read", ...: a string literal) answered by file
  // system `fs` after `duration` (callback entry to reply). Called on FUSE worker threads:
  // must be thread-safe, cheap and non-blocking, and must not throw.
  virtual void OnOp(std::string_view fs, std::string_view op,
                    std::chrono::nanoseconds duration) = 0;
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_OP_OBSERVER_H_
