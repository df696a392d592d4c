// DeviceLayout: where the bytes of each regular file of a LayerIndex sit on the EROFS image's
// extra device (device 1), in EROFS chunks. Two layouts:
//
//   * the lazy data blob (PlanBlobLayout): every regular file's non-hole chunks laid out
//     block-aligned in inode order, so a blob byte maps to one (file, offset) and back; the blob
//     is a virtual file served by the blob FUSE file system (blob_fs.h);
//   * the layer's original uncompressed tar (PlanTarLayout): each file's chunks point at its
//     payload inside the tar (tar payloads are 512-byte aligned, so 512-byte blocks). A SOCI
//     layer's lazy blob has this shape too (PlanTarBlobLayout): the tar its gzip blob inflates
//     to, so its graduated copy is the tar itself, and neither layout nor image changes.
//
// Chunk size policy (one per file): a file without holes gets one chunk of the next power of
// two >= its size (capped at kMaxChunkBits), so it is one contiguous extent; a file with holes
// (zstd:chunked "zeros" chunks) gets block-sized chunks, doubled until it has at most
// kMaxChunksPerSparseFile, and every chunk that lies entirely inside holes is a null address
// (EROFS reads zeros without touching the device). Declared sizes cost a TOC nothing, so past
// kMaxChunkBits chunks grow further rather than their count, and a file still needing more
// than kMaxChunksPerFile indexes is refused.
//
// Value types; immutable after planning, so safe to share across threads.
#ifndef LAZYPULL_MOUNT_EROFS_DEVICE_LAYOUT_H_
#define LAZYPULL_MOUNT_EROFS_DEVICE_LAYOUT_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"

namespace lazypull::mount::erofs {

// 64 MiB: larger chunks save nothing, and fsck.erofs reads a whole chunk at once.
inline constexpr uint32_t kMaxChunkBits = 26;
inline constexpr uint64_t kMaxChunksPerSparseFile = 8192;
// What the on-disk chunk format can express (5 bits above the block size).
inline constexpr uint32_t kMaxChunkBitsAboveBlock = 31;
// Hard bound on one file's chunk indexes (8 MiB of metadata): a file that would need more is
// refused (InvalidArgument) rather than allocated.
inline constexpr uint64_t kMaxChunksPerFile = uint64_t{1} << 20;

struct FileChunks {
  uint8_t chunk_bits = 0;        // log2 of the chunk size (>= block bits); 0 = no data
  std::vector<uint32_t> blocks;  // per chunk: first block on device 1, or kNullBlock (hole)
};

struct DeviceLayout {
  uint32_t block_bits = 12;
  uint64_t device_blocks = 0;     // size of device 1 in blocks
  std::vector<FileChunks> files;  // by ino - 1; empty for non-regular and empty files
};

// The chunk size (log2) the policy above gives regular file `ino` for `block_bits`.
uint32_t ChooseChunkBits(const format::LayerIndex& index, format::Ino ino, uint32_t block_bits);

// Whether [offset, offset + length) of regular file `ino` lies entirely in holes.
bool IsHoleRange(const format::LayerIndex& index, format::Ino ino, uint64_t offset,
                 uint64_t length);

// A run of file bytes in the lazy blob: blob bytes [offset, offset + length) are bytes
// [file_offset, file_offset + length) of `ino`. Bytes of the blob in no extent are zeros.
struct BlobExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  format::Ino ino = 0;
  uint64_t file_offset = 0;
};

struct BlobLayout {
  DeviceLayout device;
  std::vector<BlobExtent> extents;  // sorted by offset, non-overlapping
  uint64_t size = 0;                // blob size in bytes (device_blocks << block_bits)

  // The extents overlapping [offset, offset + length), in order.
  std::span<const BlobExtent> Find(uint64_t offset, uint64_t length) const;
};

// Plans the lazy blob of `index`. InvalidArgument if the blob would exceed 2^32 blocks or
// block_bits is outside 9..12.
absl::StatusOr<BlobLayout> PlanBlobLayout(const format::LayerIndex& index, uint32_t block_bits);

// Plans the tar layout: `payload_offsets[ino - 1]` is where regular file `ino`'s bytes start
// in the tar (must be 512-aligned and, with the file size, inside `tar_size`). 512-byte
// blocks. InvalidArgument naming the file when an offset is missing, unaligned or out of range.
absl::StatusOr<DeviceLayout> PlanTarLayout(const format::LayerIndex& index,
                                           const std::vector<uint64_t>& payload_offsets,
                                           uint64_t tar_size);

// The lazy blob of a layer whose data blob is its uncompressed tar (SOCI): device 1 is the tar
// (PlanTarLayout's chunks, 512-byte blocks) and every non-empty regular file's extent is its
// payload, [payload_offsets[ino - 1], + size), file offset 0. Errors as PlanTarLayout's, and
// InvalidArgument naming both files when two payloads overlap (a blob byte must map to one file).
absl::StatusOr<BlobLayout> PlanTarBlobLayout(const format::LayerIndex& index,
                                             const std::vector<uint64_t>& payload_offsets,
                                             uint64_t tar_size);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_DEVICE_LAYOUT_H_
