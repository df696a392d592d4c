// RecordPrefetch: runs an image's program once in a throw-away container and records which
// files it opens, per source layer — the input of `lazypull convert --optimize`.
//
// Steps: pick the manifest for this host's platform; unpack each layer into its own
// directory (UnpackLayer, checked against the config's diff_ids); stack them with a scratch
// upper directory in an overlay mount; `runc create` the program (the image's entrypoint +
// cmd, or `command`) with the image's env, working directory and user; start recording opens
// on the overlay (AccessRecorder) only then, so runc's own setup reads are not recorded;
// `runc start`; stop at exit or kill at the timeout; map each file to the topmost layer
// holding it (AssignToLayers).
//
// Everything it creates (mount, container, runc state, unpacked layers) is removed on every
// return path, SIGINT/SIGTERM/SIGHUP included (InterruptGuard: Cancelled). Must run as root.
// Thread-compatible; one recording per process at a time (see RuncContainer).
#ifndef LAZYPULL_TOOLS_OPTIMIZE_PREFETCH_RECORDER_H_
#define LAZYPULL_TOOLS_OPTIMIZE_PREFETCH_RECORDER_H_

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/convert/image_store.h"

namespace lazypull::optimize {

struct OptimizeOptions {
  // The program and its arguments; empty = the image's entrypoint + cmd.
  std::vector<std::string> command;
  // The program is killed after this long; what it opened until then is kept.
  std::chrono::milliseconds timeout = std::chrono::seconds(10);
  // Parent of the scratch directory (unpacked layers); empty = $TMPDIR or /tmp.
  std::string work_dir;
  std::string runc = "runc";
};

struct RecordedPrefetch {
  std::vector<std::string> command;        // what ran
  std::vector<std::string> accessed;       // relative paths, in order of first open
  std::vector<std::string> layer_digests;  // the manifest's tar layers, base first
  // Source layer digest -> the files to prioritize in it, in order of first open.
  std::map<std::string, std::vector<std::string>> by_layer;
  std::vector<std::string> unassigned;  // opened but in no layer (made by the program)
  bool timed_out = false;
  std::string exit;  // "exit status 0", "killed after timeout 10000 ms", ...
};

// Errors: InvalidArgument for an image without a command (and no `command`) or a user the
// image does not define; FailedPrecondition when the program cannot be started in the
// container (quoting runc, e.g. a program that does not exist) or the image has no manifest
// for this platform; DataLoss for a layer that does not match its diff_id; Internal for OS
// failures. A program that exits non-zero or runs into the timeout is not an error.
absl::StatusOr<RecordedPrefetch> RecordPrefetch(convert::ImageStore& src,
                                                const OptimizeOptions& options);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_PREFETCH_RECORDER_H_
