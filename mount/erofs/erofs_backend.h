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
// Graduation (graduation.h): a fully fetched layer gets a local copy and its lazy mounts are
// replaced in place by EROFS over that copy; overlays already built on a lazy mount keep it, and
// its blob file reads the copy. New mounts of a graduated layer, and MountLocal after a restart,
// mount the local copy directly.
//
// Restarts (issue 20): a FUSE holder keeps the blob file system, so lazy mounts outlive the
// daemon; Mount takes back the one at its target (lazy_mount_identity.h). An old lazy mount that
// outlived its layer's graduation is no snapshot's mount any more, but its blob file keeps being
// served: the restarted daemon adopts the blob file system when it mounts the snapshot's copy
// (also with no lazy layer left) and answers that blob's inode number — which names the
// snapshot — from the local copy through the copy's blob map (copy_blob_map.h). It is released
// with the snapshot (Unmount), whose copy goes with the layer's last snapshot.
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
// DropLocal (the layer's last snapshot is gone) deletes the copy and cancels the layer's
// graduation. Destruction cancels a graduation in progress.
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
