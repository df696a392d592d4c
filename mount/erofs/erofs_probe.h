// ProbeErofs: whether this kernel can serve lazy layers with EROFS the way the backend does, and
// how. Checks, in order: "erofs" is listed in options.probe_filesystems (/proc/filesystems),
// FUSE is available (/dev/fuse; the lazy data blob is a FUSE file), and a real mount of a tiny
// image written by our own writer, its file data on a `device=` data file, reads the expected
// bytes back: file-backed (Linux 6.12+) and/or through loop devices (5.16+), as
// options.attach says ("auto": file-backed first, then loop). With the attachment found it
// also tries, by real mounts: an image with 512-byte blocks (older kernels want the page
// size through a block device) and MOVE_MOUNT_BENEATH (Linux 6.5+), the in-place switch of
// graduation. Uses and removes a temp dir under $TMPDIR (default /tmp).
//
// Thread-safe.
#ifndef LAZYPULL_MOUNT_EROFS_EROFS_PROBE_H_
#define LAZYPULL_MOUNT_EROFS_EROFS_PROBE_H_

#include <string>

#include "absl/status/statusor.h"
#include "mount/mount_config.h"
#include "nlohmann/json.hpp"

namespace lazypull::mount::erofs {

// What the probe found. Value type.
struct ErofsSupport {
  ErofsAttach attach = ErofsAttach::kFile;  // kFile or kLoop
  // Images with 512-byte blocks mount (a graduated tar copy needs them; else graduation uses
  // the 4 KiB blob layout).
  bool small_blocks = true;
  // MOVE_MOUNT_BENEATH works: graduation replaces lazy mounts in place. Else only new mounts
  // of a graduated layer use its local copy.
  bool mount_beneath = true;
  // Why file-backed mounts were not used ("" when they were, or were not tried).
  std::string file_backed_error;
  // {"erofs_attach": "loop", "small_blocks": true, "mount_beneath": true, ...}
  nlohmann::json ToJson() const;
};

// The support found, or FailedPrecondition saying which check failed and why.
absl::StatusOr<ErofsSupport> ProbeErofs(const ErofsOptions& options);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_EROFS_PROBE_H_
