// The EROFS on-disk format, as far as lazypull writes and checks it (little-endian; see
// shared/formats.md "EROFS" and the kernel's fs/erofs/erofs_fs.h).
//
// We write uncompressed images only: a superblock, one extra device (the layer's data), inodes
// (compact 32-byte or extended 64-byte), inline and shared xattrs, directories and symlinks as
// FLAT_PLAIN/FLAT_INLINE blocks on the primary device, and regular files as CHUNK_BASED with
// 8-byte chunk indexes pointing at device 1. Offsets below are byte offsets inside the
// structure. Constants only; no state.
#ifndef LAZYPULL_MOUNT_EROFS_EROFS_FORMAT_H_
#define LAZYPULL_MOUNT_EROFS_EROFS_FORMAT_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lazypull::mount::erofs {

inline constexpr uint32_t kMagic = 0xE0F5E1E2;
inline constexpr uint64_t kSuperOffset = 1024;
inline constexpr uint64_t kSuperSize = 128;  // sb_extslots = 0
inline constexpr uint32_t kMinBlockBits = 9;
inline constexpr uint32_t kMaxBlockBits = 12;

// Superblock field offsets (relative to kSuperOffset).
namespace sb {
inline constexpr size_t kMagic = 0;
inline constexpr size_t kChecksum = 4;
inline constexpr size_t kFeatureCompat = 8;
inline constexpr size_t kBlockBits = 12;
inline constexpr size_t kExtSlots = 13;
inline constexpr size_t kRootNid = 14;  // u16
inline constexpr size_t kInodeCount = 16;
inline constexpr size_t kEpoch = 24;      // u64: mtime of compact inodes (old: build_time)
inline constexpr size_t kFixedNsec = 32;  // u32: nsec of compact inodes (old: build_time_nsec)
inline constexpr size_t kBlocks = 36;
inline constexpr size_t kMetaBlkAddr = 40;
inline constexpr size_t kXattrBlkAddr = 44;
inline constexpr size_t kUuid = 48;
inline constexpr size_t kVolumeName = 64;
inline constexpr size_t kFeatureIncompat = 80;
inline constexpr size_t kComprAlgs = 84;
inline constexpr size_t kExtraDevices = 86;
inline constexpr size_t kDevtSlotOff = 88;
inline constexpr size_t kDirBlkBits = 90;
}  // namespace sb

inline constexpr uint32_t kIncompatChunkedFile = 0x4;
inline constexpr uint32_t kIncompatDeviceTable = 0x8;

// Device slot (128 bytes) at devt_slotoff * 128.
inline constexpr uint64_t kDeviceSlotSize = 128;
namespace devslot {
inline constexpr size_t kTag = 0;  // 64 bytes
inline constexpr size_t kBlocks = 64;
inline constexpr size_t kMappedBlkAddr = 68;
}  // namespace devslot

// Inodes live at meta_blkaddr * block_size + 32 * nid.
inline constexpr uint64_t kInodeSlotSize = 32;
inline constexpr uint64_t kCompactInodeSize = 32;
inline constexpr uint64_t kExtendedInodeSize = 64;

// i_format = (datalayout << 1) | version.
inline constexpr uint16_t kVersionCompact = 0;
inline constexpr uint16_t kVersionExtended = 1;
inline constexpr uint16_t kLayoutFlatPlain = 0;
inline constexpr uint16_t kLayoutFlatInline = 2;
inline constexpr uint16_t kLayoutChunkBased = 4;

namespace compact {
inline constexpr size_t kFormat = 0;
inline constexpr size_t kXattrCount = 2;
inline constexpr size_t kMode = 4;
inline constexpr size_t kNlink = 6;   // u16
inline constexpr size_t kSize = 8;    // u32
inline constexpr size_t kMtime = 12;  // u32, relative to the superblock epoch (old: reserved)
inline constexpr size_t kU = 16;      // startblk / rdev / chunk format
inline constexpr size_t kIno = 20;
inline constexpr size_t kUid = 24;  // u16
inline constexpr size_t kGid = 26;  // u16
}  // namespace compact

namespace extended {
inline constexpr size_t kFormat = 0;
inline constexpr size_t kXattrCount = 2;
inline constexpr size_t kMode = 4;
inline constexpr size_t kSize = 8;  // u64
inline constexpr size_t kU = 16;
inline constexpr size_t kIno = 20;
inline constexpr size_t kUid = 24;        // u32
inline constexpr size_t kGid = 28;        // u32
inline constexpr size_t kMtime = 32;      // u64
inline constexpr size_t kMtimeNsec = 40;  // u32
inline constexpr size_t kNlink = 44;      // u32
}  // namespace extended

// Chunk-based files: i_u low 16 bits = chunk format.
inline constexpr uint16_t kChunkFormatBlkBitsMask = 0x1F;
inline constexpr uint16_t kChunkFormatIndexes = 0x20;
inline constexpr uint64_t kChunkIndexSize = 8;  // {u16 startblk_hi, u16 device_id, u32 startblk}
inline constexpr uint32_t kNullBlock = 0xFFFFFFFF;

// Xattrs.
inline constexpr uint64_t kXattrHeaderSize = 12;      // {u32 name_filter, u8 shared_count, 7 rsvd}
inline constexpr uint64_t kXattrEntryHeaderSize = 4;  // {u8 name_len, u8 index, u16 value_size}
inline constexpr uint8_t kXattrIndexUser = 1;
inline constexpr uint8_t kXattrIndexPosixAclAccess = 2;
inline constexpr uint8_t kXattrIndexPosixAclDefault = 3;
inline constexpr uint8_t kXattrIndexTrusted = 4;
inline constexpr uint8_t kXattrIndexSecurity = 6;

// Directory entries: {u64 nid, u16 nameoff, u8 file_type, u8 reserved}.
inline constexpr uint64_t kDirentSize = 12;
inline constexpr size_t kMaxNameLength = 255;
enum FileType : uint8_t {
  kFtUnknown = 0,
  kFtRegular = 1,
  kFtDirectory = 2,
  kFtCharDevice = 3,
  kFtBlockDevice = 4,
  kFtFifo = 5,
  kFtSocket = 6,
  kFtSymlink = 7,
};

// st_mode type bits → dirent file type.
uint8_t FileTypeOfMode(uint32_t mode);

// Splits an xattr name into (EROFS name index, suffix): "user.x" → (1, "x"). Returns index 0
// for names EROFS cannot store (no short prefix matches).
std::pair<uint8_t, std::string_view> SplitXattrName(std::string_view name);
// The prefix of a name index ("user." for 1); "" for unknown indexes.
std::string_view XattrPrefix(uint8_t index);

// Linux's new_encode_dev, as EROFS stores rdev.
inline uint32_t EncodeDev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}
inline void DecodeDev(uint32_t dev, uint32_t* major, uint32_t* minor) {
  *major = (dev & 0xfff00) >> 8;
  *minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
}

// Little-endian stores/loads into byte buffers.
inline void Put16(std::string& b, uint64_t off, uint16_t v) {
  for (int i = 0; i < 2; ++i) b[off + i] = static_cast<char>(v >> (8 * i));
}
inline void Put32(std::string& b, uint64_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<char>(v >> (8 * i));
}
inline void Put64(std::string& b, uint64_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[off + i] = static_cast<char>(v >> (8 * i));
}
inline uint64_t GetLe(std::string_view b, uint64_t off, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[off + i]);
  return v;
}
inline uint16_t Get16(std::string_view b, uint64_t off) {
  return static_cast<uint16_t>(GetLe(b, off, 2));
}
inline uint32_t Get32(std::string_view b, uint64_t off) {
  return static_cast<uint32_t>(GetLe(b, off, 4));
}
inline uint64_t Get64(std::string_view b, uint64_t off) { return GetLe(b, off, 8); }

inline uint64_t RoundUp(uint64_t v, uint64_t align) { return (v + align - 1) / align * align; }

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_EROFS_FORMAT_H_
