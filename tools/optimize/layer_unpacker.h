// UnpackLayer: extracts one image layer into a directory in overlayfs form, as containerd's
// overlayfs unpacker leaves it, so the directories of an image's layers stacked as overlay
// lower directories show the image's root filesystem.
//
// GNU tar extracts everything but whiteouts (numeric owners, modes, xattrs; it also refuses
// names with ".." and defers symlinks that could point outside the directory). Whiteouts are
// then applied without following any symlink the layer made (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS): `.wh.NAME` becomes a char device 0:0 NAME (unless the layer itself
// has NAME), `.wh..wh..opq` sets trusted.overlay.opaque=y on its directory; other aufs
// `.wh..wh.*` entries are dropped.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_LAYER_UNPACKER_H_
#define LAZYPULL_TOOLS_OPTIMIZE_LAYER_UNPACKER_H_

#include <chrono>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::optimize {

struct UnpackedLayer {
  Digest diff_id;  // sha256 of the uncompressed tar
  // Clean paths (tar::CleanEntryName) of the regular files and hardlinks the layer holds,
  // judged by the last entry of each name.
  std::set<std::string> regular_files;
};

struct UnpackOptions {
  // When set, a layer whose uncompressed digest differs is DataLoss.
  std::optional<Digest> expected_diff_id;
  // Scratch file for the uncompressed tar (removed before returning) and for tar's output.
  std::string scratch_prefix;
  std::chrono::milliseconds tar_timeout = std::chrono::minutes(30);
};

// Extracts `blob` (gzip, zstd or plain tar) into `dir` (existing, empty), naming the layer
// `what` in errors. Errors: DataLoss for corrupt input or a DiffID mismatch; Internal with
// tar's output if tar fails; InvalidArgument for a whiteout escaping the layer. Must run as
// root (device nodes, owners, trusted.* xattrs). Not thread-safe with respect to `dir`.
absl::StatusOr<UnpackedLayer> UnpackLayer(BlobReader& blob, const std::string& dir,
                                          const std::string& what, const UnpackOptions& options);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_LAYER_UNPACKER_H_
