// The FUSE LayerMountBackend: one libfuse3 low-level session per mounted layer, served by a
// multi-threaded session loop on threads owned by the mount, read-only, mounted with
// `ro,allow_other,default_permissions` (allow_other configurable), fsname
// `lazypull:<layer id>`, type `fuse.lazypull`.
//
// Unmount (or destruction of the handle): fuse_session_exit + a lazy unmount; if the session
// does not end within FuseOptions::unmount_timeout (the mount is still in use, e.g. as an
// overlay lowerdir), the FUSE connection is aborted through fusectl so the loop threads end
// and nothing hangs.
#ifndef LAZYPULL_MOUNT_FUSE_FUSE_BACKEND_H_
#define LAZYPULL_MOUNT_FUSE_FUSE_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "mount/backend.h"
#include "mount/mount_config.h"

namespace lazypull::mount {

std::unique_ptr<LayerMountBackend> NewFuseBackend(const FuseOptions& options);

// Mounts one layer with FUSE (what the backend's Mount does).
absl::StatusOr<std::unique_ptr<MountedLayer>> MountFuseLayer(const LayerMountRequest& request,
                                                             const FuseOptions& options);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_FUSE_BACKEND_H_
