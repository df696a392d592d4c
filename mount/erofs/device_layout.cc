#include "mount/erofs/device_layout.h"

#include <sys/stat.h>

#include <algorithm>

#include "fmt/format.h"
#include "mount/erofs/erofs_format.h"

namespace lazypull::mount::erofs {
namespace {

using format::Ino;
using format::LayerIndex;

bool IsRegular(const LayerIndex& index, Ino ino, uint64_t* size) {
  std::optional<format::InodeAttr> a = index.GetAttr(ino);
  if (!a || (a->mode & S_IFMT) != S_IFREG) return false;
  *size = a->size;
  return true;
}

bool HasHoles(const LayerIndex& index, Ino ino) {
  for (const format::Chunk& c : index.Chunks(ino)) {
    if (c.compression == format::ChunkCompression::kZeros) return true;
  }
  return false;
}

absl::Status TooManyChunks(const LayerIndex& index, Ino ino, uint64_t size) {
  return absl::InvalidArgumentError(
      fmt::format("file {} declares {} bytes: more than EROFS chunk indexes can map in {} entries",
                  index.Path(ino), size, kMaxChunksPerFile));
}

uint32_t CeilLog2(uint64_t v) {
  uint32_t bits = 0;
  while ((uint64_t{1} << bits) < v) ++bits;
  return bits;
}

}  // namespace

uint32_t ChooseChunkBits(const LayerIndex& index, Ino ino, uint32_t block_bits) {
  uint64_t size = 0;
  if (!IsRegular(index, ino, &size) || size == 0) return 0;
  const uint32_t max_bits = block_bits + kMaxChunkBitsAboveBlock;
  auto count = [&](uint32_t bits) { return ((size - 1) >> bits) + 1; };
  if (!HasHoles(index, ino)) {
    uint32_t bits = std::clamp(CeilLog2(size), block_bits, std::max(block_bits, kMaxChunkBits));
    // Only a file of over 64 TiB needs chunks past kMaxChunkBits to stay within the count.
    while (bits < max_bits && count(bits) > kMaxChunksPerFile) ++bits;
    return bits;
  }
  // Sparse files: few chunk indexes, and past 512 GiB larger chunks rather than more indexes,
  // so a declared size (which costs the TOC nothing) cannot make the metadata huge.
  uint32_t bits = block_bits;
  while (bits < max_bits && (count(bits) > kMaxChunksPerFile ||
                             (bits < kMaxChunkBits && count(bits) > kMaxChunksPerSparseFile))) {
    ++bits;
  }
  return bits;
}

bool IsHoleRange(const LayerIndex& index, Ino ino, uint64_t offset, uint64_t length) {
  std::span<const format::Chunk> chunks = index.ChunksInRange(ino, offset, length);
  if (chunks.empty()) return length == 0;
  for (const format::Chunk& c : chunks) {
    if (c.compression != format::ChunkCompression::kZeros) return false;
  }
  return true;
}

std::span<const BlobExtent> BlobLayout::Find(uint64_t offset, uint64_t length) const {
  // First extent ending after `offset`.
  auto first = std::partition_point(extents.begin(), extents.end(), [&](const BlobExtent& e) {
    return e.offset + e.length <= offset;
  });
  auto last = first;
  while (last != extents.end() && last->offset < offset + length) ++last;
  return {extents.data() + (first - extents.begin()), static_cast<size_t>(last - first)};
}

absl::StatusOr<BlobLayout> PlanBlobLayout(const LayerIndex& index, uint32_t block_bits) {
  if (block_bits < kMinBlockBits || block_bits > kMaxBlockBits) {
    return absl::InvalidArgumentError(fmt::format("block bits {} not in 9..12", block_bits));
  }
  BlobLayout out;
  out.device.block_bits = block_bits;
  out.device.files.resize(index.inode_count());
  uint64_t next_block = 0;
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    uint64_t size = 0;
    if (!IsRegular(index, ino, &size) || size == 0) continue;
    FileChunks& fc = out.device.files[ino - 1];
    fc.chunk_bits = static_cast<uint8_t>(ChooseChunkBits(index, ino, block_bits));
    const uint64_t chunk = uint64_t{1} << fc.chunk_bits;
    const uint64_t count = (size - 1) / chunk + 1;
    if (count > kMaxChunksPerFile) return TooManyChunks(index, ino, size);
    fc.blocks.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t off = i * chunk;
      const uint64_t len = std::min(chunk, size - off);
      if (IsHoleRange(index, ino, off, len)) {
        fc.blocks.push_back(kNullBlock);
        continue;
      }
      if (next_block >= kNullBlock) {
        return absl::InvalidArgumentError(
            fmt::format("layer data does not fit 2^32 blocks of {} bytes", 1u << block_bits));
      }
      fc.blocks.push_back(static_cast<uint32_t>(next_block));
      const uint64_t offset = next_block << block_bits;
      // Consecutive chunks of one file are contiguous: extend the previous extent.
      if (!out.extents.empty() && out.extents.back().ino == ino &&
          out.extents.back().offset + out.extents.back().length == offset &&
          out.extents.back().file_offset + out.extents.back().length == off) {
        out.extents.back().length += len;
      } else {
        out.extents.push_back({.offset = offset, .length = len, .ino = ino, .file_offset = off});
      }
      next_block += (len + (uint64_t{1} << block_bits) - 1) >> block_bits;
    }
  }
  out.device.device_blocks = next_block;
  out.size = next_block << block_bits;
  return out;
}

absl::StatusOr<DeviceLayout> PlanTarLayout(const LayerIndex& index,
                                           const std::vector<uint64_t>& payload_offsets,
                                           uint64_t tar_size) {
  constexpr uint32_t kTarBlockBits = 9;
  DeviceLayout out;
  out.block_bits = kTarBlockBits;
  out.device_blocks = (tar_size + 511) >> kTarBlockBits;
  if (out.device_blocks >= kNullBlock) {
    return absl::InvalidArgumentError("tar does not fit 2^32 blocks of 512 bytes");
  }
  if (payload_offsets.size() != index.inode_count()) {
    return absl::InvalidArgumentError(fmt::format("{} payload offsets for {} inodes",
                                                  payload_offsets.size(), index.inode_count()));
  }
  out.files.resize(index.inode_count());
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    uint64_t size = 0;
    if (!IsRegular(index, ino, &size) || size == 0) continue;
    const uint64_t payload = payload_offsets[ino - 1];
    if (payload % 512 != 0 || payload > tar_size || size > tar_size - payload) {
      return absl::InvalidArgumentError(
          fmt::format("file {} ({} bytes): tar payload offset {} is missing, unaligned or past "
                      "the end of the {}-byte tar",
                      index.Path(ino), size, payload, tar_size));
    }
    FileChunks& fc = out.files[ino - 1];
    fc.chunk_bits = static_cast<uint8_t>(ChooseChunkBits(index, ino, kTarBlockBits));
    const uint64_t chunk = uint64_t{1} << fc.chunk_bits;
    const uint64_t count = (size - 1) / chunk + 1;
    if (count > kMaxChunksPerFile) return TooManyChunks(index, ino, size);
    fc.blocks.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t off = i * chunk;
      const uint64_t len = std::min(chunk, size - off);
      fc.blocks.push_back(IsHoleRange(index, ino, off, len)
                              ? kNullBlock
                              : static_cast<uint32_t>((payload + off) >> kTarBlockBits));
    }
  }
  return out;
}

absl::StatusOr<BlobLayout> PlanTarBlobLayout(const LayerIndex& index,
                                             const std::vector<uint64_t>& payload_offsets,
                                             uint64_t tar_size) {
  absl::StatusOr<DeviceLayout> device = PlanTarLayout(index, payload_offsets, tar_size);
  if (!device.ok()) return device.status();
  BlobLayout out;
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    uint64_t size = 0;
    if (!IsRegular(index, ino, &size) || size == 0) continue;
    out.extents.push_back(
        {.offset = payload_offsets[ino - 1], .length = size, .ino = ino, .file_offset = 0});
  }
  std::sort(out.extents.begin(), out.extents.end(),
            [](const BlobExtent& a, const BlobExtent& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < out.extents.size(); ++i) {
    const BlobExtent& prev = out.extents[i - 1];
    if (prev.offset + prev.length > out.extents[i].offset) {
      return absl::InvalidArgumentError(
          fmt::format("files {} and {} overlap in the tar at offset {}", index.Path(prev.ino),
                      index.Path(out.extents[i].ino), out.extents[i].offset));
    }
  }
  out.device = std::move(*device);
  out.size = out.device.device_blocks << out.device.block_bits;
  return out;
}

}  // namespace lazypull::mount::erofs
