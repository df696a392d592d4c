// The EROFS LayerMountBackend: the kernel's EROFS owns every layer's metadata and page cache;
// user space only supplies missing data, and nothing at all once a layer is local.
//
// Lazy mount (Mount): the layer's EROFS metadata image is written from its LayerIndex (4 KiB
// blocks, regular files as chunks on device 1) under <dir>/images and mounted with mount(2)
// type erofs, MS_RDONLY, data `device=<dir>/blobs/<layer>.<n>`: a file of the one daemon-wide
// blob file system (blob_fs.h) whose reads go through the layer's LayerReader (lazy_blob.h).
// The image file is unlinked once mounted (the kernel holds it). A SOCI layer's blob is its
// uncompressed tar instead (512-byte blocks, each file at its tar offset from the zTOC), when
// the kernel mounts 512-byte blocks: its graduated copy is then that very tar.
//
// Graduation: a backend thread checks the lazily mounted layers every
// ErofsOptions::graduation_check; once a layer's reader reports every chunk local and the
// request carried a LayerOrigin, it builds the layer's local copy from those local chunks
// (graduated_store.h: the lazy blob layout, or a zstd:chunked or SOCI layer's original tar
// verified against the diff_id), one layer at a time, then replaces each of that layer's lazy
// mounts in place (KernelErofsMount::MountBeneath): containers started from then on get EROFS over
// a local file with no FUSE in the path; overlays already built on the lazy mount keep it (and its
// blob file, which now reads the local copy) until they are gone. Then the layer's chunks are
// released from the chunk cache (except chunks another lazy layer of this backend uses) and the
// copies' disk bytes are registered against the cache's max_bytes. New mounts of a graduated layer,
// and MountLocal after a restart, mount the local copy directly.
//
// Kernels (ErofsSupport, found by the probe): images reach the kernel file-backed (Linux 6.12+)
// or through loop devices (5.16+; two per mount, owned by the mount, autoclear, so none
// outlives its mount, also after kill -9; ones tagged with this dir's owner tag that a previous
// daemon left are detached at start). Without 512-byte-block support graduation makes only
// blob-layout copies (4 KiB blocks). Without MOVE_MOUNT_BENEATH (before 6.5) lazy mounts are
// not switched: they stay lazy, their blob files read the local copy (so the chunks still
// leave the cache), and only new mounts of the layer mount the copy (status: graduation
// "done", graduated false).
//
// Failures: a graduation job never takes the thread down (an exception is a logged, failed
// job). A failed layer stays lazy and is retried once after 10 minutes; after two failures
// (counted on disk) it is never tried again, also after a restart. A layer whose data alone
// exceeds the cache budget is not graduated. DropLocal (the layer's last snapshot is gone)
// cancels the layer's graduation: the job re-checks under the backend's lock before publishing,
// so no copy outlives the release. Destruction cancels a graduation in progress.
//
// Thread-safety: all methods are thread-safe. Handles must not outlive the backend.
#ifndef LAZYPULL_MOUNT_EROFS_EROFS_BACKEND_H_
#define LAZYPULL_MOUNT_EROFS_EROFS_BACKEND_H_

#include <memory>
#include <set>
#include <string>

#include "mount/backend.h"
#include "mount/erofs/erofs_probe.h"
#include "mount/mount_config.h"

namespace lazypull::mount {

// `erofs.dir` must be set; `support` is what ProbeErofs found. Nothing is mounted or created
// until the first Mount; loop devices a previous daemon left are detached at once.
std::unique_ptr<LayerMountBackend> NewErofsBackend(const ErofsOptions& erofs,
                                                   const FuseOptions& fuse,
                                                   const erofs::ErofsSupport& support);

// Deletes the local copies under `erofs.dir` of layers not in `keep`, for a daemon whose
// EROFS backend is not running (e.g. configured "fuse" now).
void DropUnusedErofsCopies(const ErofsOptions& erofs, const std::set<std::string>& keep);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_EROFS_EROFS_BACKEND_H_
