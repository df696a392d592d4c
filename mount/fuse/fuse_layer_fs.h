// The read-only FUSE file system of one lazy layer: libfuse3 low-level callbacks answering
// from the LayerIndex (inodes, attributes, directories, symlinks, xattrs) and the
// LayerReader (file bytes).
//
// Inode numbers are the LayerIndex's (1 = root = FUSE_ROOT_ID); nothing is created or freed
// per lookup, so forget is a no-op. File handles are always 0 and generations 1. So every
// node id the kernel holds means the same file to any server of the same layer index, and
// lookup counts do not matter: a successor daemon that adopts the connection (issue 20)
// answers requests about nodes the kernel got from its predecessor. Attributes: nanosecond mtimes
// (atime = ctime = mtime), whiteouts are char 0:0 (from the index), hardlinks share an inode and
// its nlink, st_blocks counts the non-hole bytes. Errors: ENOENT, ENOTDIR, ENODATA, ERANGE, EROFS
// for opens for writing (from the read-only mount itself once the kernel skips OPEN), EIO for any
// failed read (the LayerReader logs layer, file and chunk).
// Kernel caching (the layer is immutable): entries and attributes for attr_timeout, negative
// entries too, always READDIRPLUS, page cache kept across opens, symlinks cached, no
// OPENDIR/RELEASEDIR round trips, getxattr answered by the kernel for layers without xattrs.
// OPEN/RELEASE: none (file handles 0) unless the connection negotiated FUSE passthrough and
// the context has a PassthroughFiles: then every open asks it whether the file opens in
// passthrough mode (reads and mmap go straight to a local backing file in the kernel) or
// cached mode (as without OPEN), and RELEASE tells it when a file is closed.
// No exception ever leaves a callback. Thread-safe: the callbacks only read immutable state
// and the thread-safe LayerReader.
#ifndef LAZYPULL_MOUNT_FUSE_FUSE_LAYER_FS_H_
#define LAZYPULL_MOUNT_FUSE_FUSE_LAYER_FS_H_

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse3/fuse_lowlevel.h>

#include <atomic>
#include <memory>

#include "fetcher/layer_reader/layer_reader.h"
#include "mount/fuse/fuse_channel.h"
#include "mount/fuse/passthrough_files.h"
#include "mount/mount_config.h"

namespace lazypull::mount {

// The state the callbacks see (fuse_req_userdata). Must outlive the session.
struct FuseLayerFsContext : FuseSessionUserdata {
  std::shared_ptr<LayerReader> reader;
  FuseOptions options;
  // Null, or set before the session starts: opens may use FUSE passthrough (see above).
  PassthroughFiles* passthrough = nullptr;
  // Set by the INIT callback (before any other callback runs) when the kernel can skip
  // OPENDIR/RELEASEDIR, and OPEN/RELEASE; no_open also later, when passthrough turns out
  // unusable (the next OPEN is answered ENOSYS).
  bool no_opendir = false;
  std::atomic<bool> no_open{false};
};

// The callback table; pass a FuseLayerFsContext* as the session's userdata.
const fuse_lowlevel_ops& FuseLayerFsOps();

// stat of `ino` as the file system presents it (for tests and the readdirplus path).
bool FuseLayerStat(const format::LayerIndex& index, format::Ino ino, struct stat* st);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_FUSE_LAYER_FS_H_
