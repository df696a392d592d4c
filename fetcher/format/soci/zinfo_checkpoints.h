// ZinfoCheckpoints: the gzip checkpoints of a SOCI zTOC (`compression_info.checkpoints`), a
// binary blob defined by soci-snapshotter's ztoc/compression/gzip_zinfo.{h,c}. Each checkpoint
// is a place in the gzip stream where raw inflation can restart: the compressed offset of the
// first whole byte of a deflate block, how many bits of the byte before it belong to that
// block, the uncompressed offset, and the 32 KiB of uncompressed data that precede it (the
// dictionary). See shared/formats.md (SOCI section) for the layout of both blob versions.
//
// Value type; immutable after Parse/Create; thread-safe for concurrent const use.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_ZINFO_CHECKPOINTS_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_ZINFO_CHECKPOINTS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::soci {

inline constexpr size_t kWindowSize = 32768;
// int64 compressed offset, int64 uncompressed offset, uint8 bits, window.
inline constexpr size_t kCheckpointRecordSize = 8 + 8 + 1 + kWindowSize;
// int32 checkpoint count, int64 span size.
inline constexpr size_t kZinfoHeaderSize = 4 + 8;

// lazypull's windowless blob (the fine index's zTOC, fine_index.h; never read by soci): the same
// header, then per checkpoint only {int64 compressed offset, int64 uncompressed offset, uint8
// bits}; every window reads as zeros (the real ones live in the fine index's windows blob).
inline constexpr size_t kWindowlessRecordSize = 8 + 8 + 1;

// v1 blobs omit checkpoint 0 (implied: compressed offset 10, bits 0, zero window); v2 blobs
// hold every checkpoint. The blob does not name its version: its length does.
enum class ZinfoVersion { kV1 = 1, kV2 = 2 };

struct Checkpoint {
  uint64_t compressed_offset = 0;    // first whole byte of the block (zlib's `in`)
  uint64_t uncompressed_offset = 0;  // zlib's `out`
  uint8_t bits = 0;         // 0..7: the top `bits` bits of byte compressed_offset-1 start the block
  std::string_view window;  // kWindowSize bytes of uncompressed data preceding the checkpoint

  // Where the compressed bytes needed to resume here start.
  uint64_t resume_offset() const { return compressed_offset - (bits != 0 ? 1 : 0); }
};

// A checkpoint as the builder records it (owns its window).
struct OwnedCheckpoint {
  uint64_t compressed_offset = 0;
  uint64_t uncompressed_offset = 0;
  uint8_t bits = 0;
  std::string window;  // exactly kWindowSize bytes
};

class ZinfoCheckpoints {
 public:
  ZinfoCheckpoints() = default;

  // Parses `blob` (either version) and checks what the blob alone can tell: at least one
  // checkpoint, checkpoint 0 at uncompressed offset 0, compressed and uncompressed offsets
  // strictly increasing, bits <= 7, a checkpoint with bits at compressed offset >= 1, span
  // size >= 0. `max_checkpoints` caps the count the header claims. Errors: InvalidArgument
  // naming the first inconsistency (length that matches neither version, bad offsets).
  static absl::StatusOr<ZinfoCheckpoints> Parse(std::string blob, size_t max_checkpoints);

  // Parses a windowless blob (see kWindowlessRecordSize) with Parse's checks; every window
  // reads as zeros. version() is kV2.
  static absl::StatusOr<ZinfoCheckpoints> ParseWindowless(std::string blob, size_t max_checkpoints);
  // Serializes the offsets and bits of `checkpoints` as a windowless blob (windows ignored).
  static absl::StatusOr<std::string> SerializeWindowless(
      uint64_t span_size, const std::vector<OwnedCheckpoint>& checkpoints);

  // Serializes `checkpoints` (in order, as the builder found them) as a v2 blob.
  // InvalidArgument if a window is not kWindowSize bytes or there are none.
  static absl::StatusOr<std::string> SerializeV2(uint64_t span_size,
                                                 const std::vector<OwnedCheckpoint>& checkpoints);

  ZinfoVersion version() const { return version_; }
  uint64_t span_size() const { return span_size_; }
  size_t size() const { return entries_.size(); }
  // Checkpoint `i` (< size()); its window points into this object.
  Checkpoint at(size_t i) const;
  // The blob as parsed (for re-serialization byte for byte).
  const std::string& blob() const { return blob_; }
  // Index of the last checkpoint whose uncompressed offset is <= `offset` (0 if none).
  size_t IndexForUncompressedOffset(uint64_t offset) const;

 private:
  static absl::StatusOr<ZinfoCheckpoints> ParseRecords(std::string blob, size_t max_checkpoints,
                                                       bool windowless);

  struct Entry {
    uint64_t in = 0;
    uint64_t out = 0;
    uint8_t bits = 0;
    int64_t window_offset = -1;  // into blob_; -1 = the implied all-zero window (v1)
  };
  std::string blob_;
  ZinfoVersion version_ = ZinfoVersion::kV2;
  uint64_t span_size_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_ZINFO_CHECKPOINTS_H_
