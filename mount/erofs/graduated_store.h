// GraduatedStore: local copies of layers that no longer need the network, so they can be
// mounted by EROFS with no FUSE in the data path ("graduation"). A copy is built from the
// layer's chunks that are already local and verified: graduating a fully fetched layer
// downloads nothing again (a zstd:chunked tar rebuild fetches only its tar header frames), and
// once the copy exists the caller releases those chunks from the chunk cache, so the layer is
// stored once. Under <dir>/<layer>/ (0700; files 0400: root only, the kernel's EROFS mount
// reads them as root):
//
//   meta.erofs   EROFS metadata image whose chunk indexes point into the data file.
//   layer.blob   method "blob": the layer's file contents in the lazy mount's blob layout
//                (device_layout.h PlanBlobLayout, 4 KiB blocks), read through the LayerReader
//                (every chunk checked against its digest when it was fetched, and again on
//                its first read from a chunk file of an earlier process), the TOC verified as
//                for the lazy mount. Holes and block padding are file holes.
//   layer.tar    method "tar" (zstd:chunked only): the layer's ORIGINAL uncompressed tar,
//                rebuilt from the local chunks plus its small header frames (tar_rebuilder.h),
//                accepted only if its sha256 equals the image config's diff_id, then every chunk
//                digest of the index checked against it; chunk indexes point at the payloads in
//                the tar (512-byte blocks). All-zero 4 KiB blocks are holes.
//                A SOCI layer's tar is the whole gzip blob inflated (soci_tar.h): spans from
//                the chunk cache or the registry, each checked against its span digest before
//                it is inflated; accepted only if it hashes to the diff_id and every file sits
//                at the tar offset its zTOC gives (where the lazy mount read it from).
//   info.json    what was verified: layer, method, diff_id (tar), sizes, time.
//   (the caller adds lazy-blob.map, copy_blob_map.h, with PendingCopy::AddFile)
//
// Method: "tar" for a zstd:chunked layer whose origin gives the blob and diff_id and whose
// holes add up to at most kMaxTarHoleBytes (the diff_id check hashes every byte, holes
// included: a 100 GiB sparse file would cost minutes of CPU); "blob" otherwise, and when the
// rebuild fails or does not match the diff_id. eStargz is always "blob": its tar headers are in
// the same gzip members as the data, so its original tar would mean downloading it again. A SOCI
// layer is always "tar" (its lazy blob already has the tar's layout) and has no fallback: without
// a diff_id, or when its tar does not match it, Build fails and the layer stays lazy, serving
// only bytes of spans that matched their digests (without tar_copies it is "blob", as eStargz).
//
// A layer directory appears by renaming a complete temp directory (Publish), so "present"
// means "complete and verified"; a crash mid-way leaves only a temp dir, removed when the next
// store is constructed. Memory is bounded per graduation (pieces of kGraduationPieceBytes;
// zero runs never materialized) whatever the layer declares.
//
// <dir>/.failures-<layer> counts failed graduations of a layer, so the caller can stop
// retrying one that keeps failing, also across restarts.
//
// Thread-safety: all methods are thread-safe; Build of the same layer must not run twice at
// once (the backend runs one graduation at a time).
#ifndef LAZYPULL_MOUNT_EROFS_GRADUATED_STORE_H_
#define LAZYPULL_MOUNT_EROFS_GRADUATED_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "mount/backend.h"

namespace lazypull::mount::erofs {

// Largest total of "zeros" chunk bytes a tar rebuild may hash (see above).
inline constexpr uint64_t kMaxTarHoleBytes = 1ull << 30;

struct GraduatedLayer {
  std::string dir;
  std::string image;   // meta.erofs
  std::string data;    // layer.blob or layer.tar
  std::string method;  // "blob" or "tar"
};

struct GraduationStats {
  std::string method;            // "blob" or "tar"
  uint64_t fetched_bytes = 0;    // compressed bytes fetched from the registry for the copy
  uint64_t data_bytes = 0;       // apparent size of the data file
  uint64_t disk_bytes = 0;       // bytes the copy occupies on disk (allocated blocks)
  uint64_t chunks_verified = 0;  // data chunks checked (as fetched, or against the tar)
  double seconds = 0;
};

class GraduatedStore {
 public:
  // A built copy not yet visible: its temp directory is removed on destruction unless
  // Publish renamed it into place.
  class PendingCopy {
   public:
    ~PendingCopy();
    PendingCopy(const PendingCopy&) = delete;
    PendingCopy& operator=(const PendingCopy&) = delete;
    const GraduationStats& stats() const { return stats_; }
    // Method "tar": where regular file `ino`'s bytes start in the tar (by ino - 1). Empty for
    // "blob" (the lazy blob layout itself).
    const std::vector<uint64_t>& tar_payloads() const { return tar_payloads_; }
    // Adds file `name` (0400) with `content` to the copy, published with it.
    absl::Status AddFile(const std::string& name, std::string_view content);

   private:
    friend class GraduatedStore;
    PendingCopy() = default;
    std::string layer_id_;
    std::string tmp_;
    bool published_ = false;
    GraduationStats stats_;
    std::vector<uint64_t> tar_payloads_;
  };

  // `dir` is created on first use. Removes temp leftovers of a crashed graduation. Without
  // `tar_copies` every copy uses method "blob" (4 KiB blocks): for kernels that mount no
  // 512-byte-block image (older kernels want page-sized EROFS blocks; the probe finds out).
  explicit GraduatedStore(std::string dir, bool tar_copies = true);

  // The complete local copy of `layer_id`, if any.
  std::optional<GraduatedLayer> Find(const std::string& layer_id) const;

  // Builds the local copy of the layer `reader` serves (see above) in a temp directory.
  // Cancelled once `cancel` is set; errors of `reader` and `origin` keep their codes;
  // DataLoss when bytes do not match their digests (nothing is kept).
  absl::StatusOr<std::unique_ptr<PendingCopy>> Build(const std::string& layer_id,
                                                     LayerReader& reader, const LayerOrigin& origin,
                                                     const std::atomic<bool>& cancel);
  // Renames a built copy into place (replacing an older one). The caller decides, under its
  // own lock, that the layer is still wanted.
  absl::Status Publish(PendingCopy& copy);

  // Deletes the local copy and the failure count (mounts using it keep their open files). OK
  // if absent.
  absl::Status Remove(const std::string& layer_id);
  // Deletes every copy and failure count of a layer not in `keep` (layer ids); temp dirs are
  // left to the constructor (a graduation may be running). Returns the layer dirs removed.
  std::vector<std::string> RemoveAllBut(const std::set<std::string>& keep);

  // Failed graduations of `layer_id` recorded so far (0 if none).
  int Failures(const std::string& layer_id) const;
  // Records `count` failed graduations of `layer_id` (persisted, fsynced).
  absl::Status SetFailures(const std::string& layer_id, int count);

  // Bytes every copy occupies on disk (allocated blocks), temp dirs included.
  uint64_t DiskBytes() const;

  const std::string& dir() const { return dir_; }

 private:
  std::string Name(const std::string& layer_id) const;
  std::string LayerDir(const std::string& layer_id) const;
  std::string FailuresPath(const std::string& layer_id) const;

  const std::string dir_;
  const bool tar_copies_;
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_GRADUATED_STORE_H_
