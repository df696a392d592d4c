// The EROFS LayerMountBackend: the kernel's EROFS owns every layer's metadata and page cache;
// user space only supplies missing data, and nothing at all once a layer is local.
//
// Lazy mount (Mount): the layer's EROFS metadata image is written from its LayerIndex (4 KiB
// blocks, regular files as chunks on device 1) under <dir>/images and mounted with mount(2)
// type erofs, MS_RDONLY, data `device=<dir>/blobs/<layer>.<n>`: a file of the one daemon-wide
// blob file system (blob_fs.h) whose reads go through the layer's LayerReader (lazy_blob.h).
// The image file is unlinked once mounted (the kernel holds it).
//
// Graduation: a backend thread checks the lazily mounted layers every
// ErofsOptions::graduation_check; once a layer's reader reports every chunk local and the
// request carried a LayerOrigin, it builds the layer's local copy (graduated_store.h: original
// tar verified against the diff_id + 512-byte-block image), one layer at a time, then replaces
// each of that layer's lazy mounts in place (KernelErofsMount::MountBeneath): containers started
// from then on get EROFS over a local file with no FUSE in the path; overlays already built on
// the lazy mount keep it (and its blob file) until they are gone. New mounts of a graduated
// layer, and MountLocal after a restart, mount the local copy directly. A failed graduation is
// logged and the layer stays lazy; it is retried after 10 minutes, except when the content did
// not match its diff_id or chunk digests (DataLoss), which no retry can change. Destruction
// cancels a graduation in progress.
//
// Thread-safety: all methods are thread-safe. Handles must not outlive the backend.
#ifndef LAZYPULL_MOUNT_EROFS_EROFS_BACKEND_H_
#define LAZYPULL_MOUNT_EROFS_EROFS_BACKEND_H_

#include <memory>
#include <string>

#include "mount/backend.h"
#include "mount/mount_config.h"

namespace lazypull::mount {

// `erofs.dir` must be set. Nothing is mounted or created until the first Mount.
std::unique_ptr<LayerMountBackend> NewErofsBackend(const ErofsOptions& erofs,
                                                   const FuseOptions& fuse);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_EROFS_EROFS_BACKEND_H_
