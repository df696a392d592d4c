// GraduatedStore: local copies of layers that no longer need the network, so they can be
// mounted by EROFS with no FUSE in the data path ("graduation"). Under <dir>/<layer>/:
//
//   layer.tar    the layer's ORIGINAL uncompressed tar; its sha256 equals the image config's
//                diff_id (a whole-layer check on top of the chunk digests). All-zero 4 KiB
//                blocks are left as file holes, so sparse files cost no disk.
//   meta.erofs   EROFS metadata image with 512-byte blocks whose chunk indexes point at the
//                file payloads inside layer.tar (tar payloads are 512-byte aligned).
//   info.json    what was verified: layer, diff_id, tar size, files, time.
//
// A layer directory appears by renaming a complete temp directory, so "present" means
// "complete and verified"; a crash mid-way leaves only a temp dir, removed by the next Open.
//
// How the tar is obtained (and why): the chunk cache holds every verified file payload but no
// tar headers or padding.
//   * zstd:chunked: headers and padding are separate zstd frames between the chunk frames, so
//     the tar is rebuilt from the local chunks (through the LayerReader) plus those small
//     frames fetched from the registry (tar_rebuilder.h): a few percent of the layer.
//   * eStargz (or a rebuilt tar that does not match the diff_id): headers are compressed into
//     the same gzip members as the data, so the original tar cannot be recovered from the
//     cache; the compressed layer is downloaded once more (one verified sequential GET,
//     ~1x the compressed size) and decompressed.
// Either way the result must hash to the diff_id, and every chunk digest of the index is then
// checked against the tar, so the graduated view serves exactly what the lazy view served.
//
// Thread-safety: all methods are thread-safe; Graduate of the same layer must not run twice
// at once (the backend runs one graduation at a time).
#ifndef LAZYPULL_MOUNT_EROFS_GRADUATED_STORE_H_
#define LAZYPULL_MOUNT_EROFS_GRADUATED_STORE_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "mount/backend.h"

namespace lazypull::mount::erofs {

struct GraduatedLayer {
  std::string dir;
  std::string image;  // meta.erofs
  std::string tar;    // layer.tar
};

struct GraduationStats {
  std::string method;             // "rebuilt" (zstd:chunked from chunks) or "downloaded"
  uint64_t compressed_bytes = 0;  // fetched from the registry
  uint64_t tar_bytes = 0;
  uint64_t chunks_verified = 0;
  double seconds = 0;
};

class GraduatedStore {
 public:
  // `dir` is created on first use. Removes temp leftovers of a crashed graduation.
  explicit GraduatedStore(std::string dir);

  // The complete local copy of `layer_id`, if any.
  std::optional<GraduatedLayer> Find(const std::string& layer_id) const;

  // Builds the local copy of the layer `reader` serves (see above). DataLoss when the tar does
  // not match the diff_id or a chunk digest (nothing is kept); Cancelled once `cancel` is set;
  // errors of `origin` keep their code.
  absl::StatusOr<GraduationStats> Graduate(const std::string& layer_id, LayerReader& reader,
                                           const LayerOrigin& origin,
                                           const std::atomic<bool>& cancel);

  // Deletes the local copy (mounts using it keep their open files). OK if absent.
  absl::Status Remove(const std::string& layer_id);

  const std::string& dir() const { return dir_; }

 private:
  std::string LayerDir(const std::string& layer_id) const;

  const std::string dir_;
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_GRADUATED_STORE_H_
