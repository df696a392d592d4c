// How a lazy EROFS mount names itself so that the next daemon recognises it (issue 20): a
// lazy layer's EROFS mount outlives the daemon (its blob file system's FUSE connection is kept
// by the FUSE holder), and a restarted daemon takes it back instead of mounting again when
// the mount at the snapshot's target is the one it would have made.
//
// Naming: the blob file of a lazy mount has a stable inode number, StableBlobIno(mount id,
// epoch), where the mount id is the snapshot's id (never reused) and the epoch counts fresh
// mounts of that snapshot that had to replace a previous one (so a detached old mount still in
// use never shares an inode number with a new blob of another layout); its metadata image is
// <dir>/images/<layer>.<ino>.<layout fingerprint>.erofs. The kernel shows that path as the
// mount's source (file-backed) or as its loop device's backing file, also after the image was
// unlinked, so the successor reads the inode number and the fingerprint of the blob layout the
// mounted image expects back from the kernel: no state file can disagree with the mount.
//
// Thread-safe (no state).
#ifndef LAZYPULL_MOUNT_EROFS_LAZY_MOUNT_IDENTITY_H_
#define LAZYPULL_MOUNT_EROFS_LAZY_MOUNT_IDENTITY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "mount/erofs/device_layout.h"

namespace lazypull::mount::erofs {

// The blob inode number of the `epoch`-th fresh mount of `mount_id`; 0 (no stable number)
// when mount_id is 0 or too large.
uint64_t StableBlobIno(uint64_t mount_id, uint8_t epoch);
inline uint64_t MountIdOfBlobIno(uint64_t ino) { return ino >> 8; }
inline uint8_t EpochOfBlobIno(uint64_t ino) { return static_cast<uint8_t>(ino & 0xff); }

// 16 hex digits of the sha256 of everything of `layout` the image and the blob depend on.
std::string LayoutFingerprint(const BlobLayout& layout);

// <images_dir>/<blob_name>.<fingerprint>.erofs
std::string LazyImagePath(const std::string& images_dir, const std::string& blob_name,
                          const std::string& fingerprint);

// What the mount on top at `target` says about itself when it is a lazy EROFS mount of an
// image <images_dir>/<name_hint>.<ino>.<fingerprint>.erofs (through a loop device or not).
struct ExistingLazyMount {
  uint64_t ino = 0;
  std::string fingerprint;
  bool loop = false;  // attached through loop devices
};
std::optional<ExistingLazyMount> FindExistingLazyMount(const std::string& target,
                                                       const std::string& images_dir,
                                                       const std::string& name_hint);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_LAZY_MOUNT_IDENTITY_H_
