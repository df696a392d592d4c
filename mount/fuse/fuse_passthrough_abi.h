// FUSE passthrough (Linux 6.9+, protocol 7.40) as this project speaks it without libfuse's
// help: Debian's libfuse 3.14 and its linux/fuse.h (7.38) predate it, so the few kernel ABI
// bits are spelled out here (include/uapi/linux/fuse.h of 6.9+) and FuseChannel rewrites the
// INIT and OPEN replies libfuse writes.
//
//   INIT: the kernel offers FUSE_PASSTHROUGH (flags2 bit 5 = flag bit 37, with FUSE_INIT_EXT)
//     when built with CONFIG_FUSE_PASSTHROUGH; the server accepts by echoing the flag and a
//     max_stack_depth (fuse_init_out offset 36) in 1..FILESYSTEM_MAX_STACK_DEPTH (2), and not
//     asking FUSE_WRITEBACK_CACHE (fs/fuse/inode.c process_init_reply). Depth 1: backing files
//     must live on a non-stacked file system (ext4, xfs, ...; not overlayfs), and the FUSE
//     mount itself can still be an overlayfs lower layer (overlay depth 2).
//   BACKING_OPEN (ioctl on /dev/fuse): registers an open fd as a backing file of the
//     connection and returns its id (> 0). EPERM without CAP_SYS_ADMIN or when passthrough was
//     not negotiated; ELOOP when the fd's file system is stacked as deep as max_stack_depth.
//     Ids belong to the connection (they outlive the daemon that registered them) until
//     BACKING_CLOSE or the end of the connection.
//   OPEN reply: FOPEN_PASSTHROUGH with backing_id (the former padding of fuse_open_out); only
//     with FOPEN_DIRECT_IO / FOPEN_PARALLEL_DIRECT_WRITES / FOPEN_NOFLUSH beside it (never
//     FOPEN_KEEP_CACHE), else the open fails with EIO. Reads and mmap then go to the backing
//     file. An inode is in one io mode at a time (fs/fuse/iomode.c): a passthrough open fails
//     (EIO) while the inode has cached opens or a passthrough open with another backing file,
//     and a cached open fails while it has passthrough opens.
//
// Thread-safe (stateless).
#ifndef LAZYPULL_MOUNT_FUSE_FUSE_PASSTHROUGH_ABI_H_
#define LAZYPULL_MOUNT_FUSE_FUSE_PASSTHROUGH_ABI_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace lazypull::mount {

inline constexpr uint64_t kFuseInitExt = 1ull << 30;
inline constexpr uint64_t kFusePassthrough = 1ull << 37;
inline constexpr uint32_t kFopenPassthrough = 1u << 7;
inline constexpr uint32_t kFopenKeepCache = 1u << 1;
// The stack depth we announce (see above).
inline constexpr uint32_t kPassthroughStackDepth = 1;
// Offsets in fuse_init_out (protocol 7.40).
inline constexpr size_t kInitOutFlags = 12;
inline constexpr size_t kInitOutFlags2 = 32;
inline constexpr size_t kInitOutMaxStackDepth = 36;
inline constexpr size_t kInitOutMinSize = 40;

// Registers `fd` as a backing file of the connection of `dev_fd`; its id. Errors carry the
// errno (PermissionDenied for EPERM, FailedPrecondition for ELOOP, Internal otherwise).
absl::StatusOr<int32_t> FuseBackingOpen(int dev_fd, int fd);
// Unregisters a backing id (files opened with it keep it until they are closed).
absl::Status FuseBackingClose(int dev_fd, int32_t id);

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_FUSE_PASSTHROUGH_ABI_H_
