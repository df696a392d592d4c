// BuildErofsImage: the EROFS metadata image of a LayerIndex, written by lazypull itself (the
// Debian erofs-utils cannot take a TOC or a tar index as input).
//
// The image holds all metadata; file data stays on device 1 (the lazy blob or the original
// tar, see device_layout.h), which the kernel is given with `-o device=PATH`:
//   * superblock with a device table of one extra device; no checksum, no compression;
//   * inodes in breadth-first order (root first, so its nid fits the superblock's u16):
//     compact 32-byte inodes when the file fits them (size < 4 GiB, uid/gid/nlink <= 65535,
//     mtime equal to the image-wide epoch/nsec, chosen as the most common mtime), extended
//     64-byte inodes otherwise, so sizes, ids and nanosecond mtimes survive;
//   * xattrs inline after the inode; (name, value) pairs used by two or more inodes are stored
//     once in the shared xattr area and referenced by id. Names EROFS has no prefix for (not
//     user./trusted./security./system.posix_acl_*) are dropped and counted;
//   * directories: `.`/`..` and the children as dirents sorted bytewise, no entry straddling a
//     block, the last partial block inline after the inode when it fits (FLAT_INLINE);
//   * symlinks: the target inline when it fits, in blocks otherwise;
//   * device nodes, fifos, sockets (rdev in i_u); overlay whiteouts are char 0:0 inodes and
//     opaque directories carry their xattrs, exactly as the index presents them;
//   * hardlinks: one inode (one nid) with the index's nlink;
//   * regular files: CHUNK_BASED with 8-byte indexes on device 1; holes are null addresses;
//     empty files FLAT_PLAIN.
// The result passes `fsck.erofs` (4 KiB blocks; erofs-utils 1.5 knows no other size) and
// CheckErofsImage (image_checker.h) for every block size.
//
// Thread-safe (pure function of its inputs).
#ifndef LAZYPULL_MOUNT_EROFS_IMAGE_WRITER_H_
#define LAZYPULL_MOUNT_EROFS_IMAGE_WRITER_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "mount/erofs/device_layout.h"

namespace lazypull::mount::erofs {

struct ImageOptions {
  // Tag of device 1 in the device table (at most 64 bytes; longer is cut). The kernel opens it
  // as a path when no `device=` option is given, so it names the data file.
  std::string device_tag;
  // Volume UUID (e.g. derived from the layer digest so images are reproducible).
  std::array<uint8_t, 16> uuid{};
};

struct ImageStats {
  uint64_t inodes = 0;
  uint64_t compact_inodes = 0;
  uint64_t extended_inodes = 0;
  uint64_t shared_xattrs = 0;   // distinct entries in the shared area
  uint64_t dropped_xattrs = 0;  // names EROFS cannot store
  uint64_t image_bytes = 0;
};

// Builds the image bytes. `device` gives the block size (device.block_bits) and every regular
// file's chunks; it must have been planned from `index`. InvalidArgument (naming the file) when
// something cannot be represented (a name over 255 bytes, an xattr value over 64 KiB, ...).
absl::StatusOr<std::string> BuildErofsImage(const format::LayerIndex& index,
                                            const DeviceLayout& device, const ImageOptions& options,
                                            ImageStats* stats = nullptr);

// BuildErofsImage written to `path` with WriteFileAtomically (base/atomic_file.h; so `path` is
// either absent or complete), mode 0600 (it lists an image's files). Errors name the path.
absl::Status WriteErofsImage(const format::LayerIndex& index, const DeviceLayout& device,
                             const ImageOptions& options, const std::string& path,
                             ImageStats* stats = nullptr);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_IMAGE_WRITER_H_
