// ProbeErofs: whether this kernel can serve lazy layers with EROFS the way the backend does.
// Checks, in order: "erofs" is listed in options.probe_filesystems (/proc/filesystems), FUSE is
// available (/dev/fuse; the lazy data blob is a FUSE file), and a real file-backed mount(2) of a
// tiny image written by our own writer, with its file data on a `device=` data file, reads the
// expected bytes back. Uses and removes a temp dir under $TMPDIR (default /tmp).
//
// Thread-safe.
#ifndef LAZYPULL_MOUNT_EROFS_EROFS_PROBE_H_
#define LAZYPULL_MOUNT_EROFS_EROFS_PROBE_H_

#include "absl/status/status.h"
#include "mount/mount_config.h"

namespace lazypull::mount::erofs {

// OK, or FailedPrecondition saying which check failed and why.
absl::Status ProbeErofs(const ErofsOptions& options);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_EROFS_PROBE_H_
