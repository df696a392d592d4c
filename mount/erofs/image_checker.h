// CheckErofsImage: an independent reader of the EROFS images lazypull writes, enforcing the
// invariants fsck.erofs and the kernel rely on, for every block size (Debian's fsck.erofs 1.5
// only knows 4 KiB blocks). Used by tests, the libFuzzer target and `lazypull`'s own checks.
//
// Checked: superblock (magic, block size 512..4096, only the CHUNKED_FILE and DEVICE_TABLE
// incompat features, one extra device, inode count, image size); every inode reachable from the
// root (format, layout, inode and inline data inside one block, xattr ibody bounds and entries,
// shared xattr ids inside the shared area, name indexes); directories (`.` and `..` present once
// and pointing at the directory and its parent, dirents sorted bytewise, nameoffs consistent,
// names 1..255 bytes, no entry straddling a block, file types matching the inodes, no directory
// reachable twice); chunk-based files (chunk format, index array inside the image, device 1 for
// data and 0 for holes, chunks inside device 1); nlink of directories (2 + subdirectories).
//
// Thread-safe (pure function).
#ifndef LAZYPULL_MOUNT_EROFS_IMAGE_CHECKER_H_
#define LAZYPULL_MOUNT_EROFS_IMAGE_CHECKER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::mount::erofs {

// One file as the image describes it.
struct CheckedInode {
  uint64_t nid = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  bool extended = false;
  std::map<std::string, std::string> xattrs;  // full names
  std::string symlink_target;
  // Regular files: chunk size and, per chunk, the device-1 block (0xFFFFFFFF = hole).
  uint32_t chunk_bits = 0;
  std::vector<uint32_t> chunk_blocks;
};

struct CheckedImage {
  uint32_t block_bits = 0;
  uint64_t device_blocks = 0;
  uint64_t inode_count = 0;
  std::string device_tag;
  // Every reachable name: path relative to the root ("" = root) → inode. Hardlinks appear under
  // each name with the same nid.
  std::map<std::string, CheckedInode> files;
};

// Parses and checks `image`. DataLoss naming the nid and the broken rule on any violation.
absl::StatusOr<CheckedImage> CheckErofsImage(std::string_view image);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_IMAGE_CHECKER_H_
