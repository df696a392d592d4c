// CopyBlobMap: where the bytes of a layer's lazy data blob (device_layout.h BlobLayout) lie in
// the layer's graduated copy (graduated_store.h), so a lazy EROFS mount that outlives the
// layer's graduation keeps reading exact, verified bytes from local disk instead of chunks that
// were released from the cache — in this daemon and in every later one (issue 20: a container
// started before graduation keeps the old lazy mount, and with a FUSE holder the blob file
// system and that mount outlive the daemon).
//
// A map is a list of disjoint extents (blob offset, length, data-file offset) sorted by blob
// offset; blob bytes in no extent read as zeros (block padding, holes). A blob copy of a
// blob-layout lazy blob is one extent over the whole blob; a tar copy gives each file extent of
// the lazy blob its payload offset in the tar. The map is stored in the copy's directory
// (kCopyBlobMapFile) as text, written before the copy is published, so a copy and its map are
// complete together. It names the fingerprint of the lazy layout it was made for
// (lazy_mount_identity.h LayoutFingerprint): a lazy mount uses it only when its own layout has
// that fingerprint.
//
// Thread-safety: CopyBlobMap is a value type; CopyBlobSource is thread-safe (immutable).
#ifndef LAZYPULL_MOUNT_EROFS_COPY_BLOB_MAP_H_
#define LAZYPULL_MOUNT_EROFS_COPY_BLOB_MAP_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/device_layout.h"

namespace lazypull::mount::erofs {

// The map's file name inside a graduated copy's directory.
inline constexpr char kCopyBlobMapFile[] = "lazy-blob.map";

struct CopyBlobMap {
  struct Extent {
    uint64_t blob_offset = 0;
    uint64_t length = 0;
    uint64_t data_offset = 0;
  };
  std::string fingerprint;  // of the lazy blob layout (LayoutFingerprint)
  uint64_t blob_size = 0;
  std::vector<Extent> extents;  // sorted by blob_offset, disjoint, inside blob_size
};

// The map of `lazy` (whose LayoutFingerprint is `fingerprint`; `lazy_is_tar` when it is a SOCI
// layer's tar layout) into a copy of method `method` ("blob" or "tar"; `payloads`: where regular
// file `ino` starts in the tar, by ino - 1). nullopt when the copy cannot serve the lazy blob (a
// blob copy of a tar-layout blob, or a tar copy without payloads).
std::optional<CopyBlobMap> MapLazyBlobToCopy(const BlobLayout& lazy, std::string fingerprint,
                                             bool lazy_is_tar, const std::string& method,
                                             const std::vector<uint64_t>& payloads);

std::string SerializeCopyBlobMap(const CopyBlobMap& map);
// InvalidArgument (naming the line) for text that is not a well-formed map.
absl::StatusOr<CopyBlobMap> ParseCopyBlobMap(std::string_view text);
// Reads <copy_dir>/kCopyBlobMapFile. NotFound when the copy has none (an older copy).
absl::StatusOr<CopyBlobMap> ReadCopyBlobMap(const std::string& copy_dir);

// Copies blob bytes [offset, offset + n) (n already clamped to map.blob_size) from `data` (the
// copy's data file) into `buf` through `map`. DataLoss naming `what` when the file is short.
absl::Status ReadThroughCopyMap(const CopyBlobMap& map, const UniqueFd& data,
                                const std::string& what, uint64_t offset, char* buf, size_t n);

// A lazy blob served from the graduated copy alone (no index, no reader): what a restarted
// daemon gives the kernel for the blob file of a lazy mount that outlived its layer's graduation.
class CopyBlobSource : public BlobSource {
 public:
  CopyBlobSource(std::string layer_id, UniqueFd data, CopyBlobMap map)
      : layer_id_(std::move(layer_id)), data_(std::move(data)), map_(std::move(map)) {}
  uint64_t size() const override { return map_.blob_size; }
  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buf, size_t length) override;

 private:
  const std::string layer_id_;
  const UniqueFd data_;
  const CopyBlobMap map_;
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_COPY_BLOB_MAP_H_
