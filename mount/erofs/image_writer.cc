#include "mount/erofs/image_writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "base/atomic_file.h"
#include "fmt/format.h"
#include "mount/erofs/erofs_format.h"

namespace lazypull::mount::erofs {
namespace {

using format::Ino;
using format::LayerIndex;

// Primary device layout: [0, 1024) unused, superblock, device slot, then the inodes (root
// first), the shared xattr area and the directory/symlink blocks.
constexpr uint64_t kDeviceSlotOffset = kSuperOffset + kSuperSize;  // 1152 = slot 9
constexpr uint64_t kMetaStart = kDeviceSlotOffset + kDeviceSlotSize;
constexpr uint64_t kMaxIbodyXattrCount = 65535;

struct XattrItem {
  uint8_t index = 0;
  std::string_view suffix;
  std::string_view value;
  uint64_t EntrySize() const {
    return RoundUp(kXattrEntryHeaderSize + suffix.size() + value.size(), 4);
  }
};

struct NamedChild {
  std::string_view name;
  Ino ino = 0;
};

struct InodePlan {
  Ino ino = 0;
  format::InodeAttr attr;
  bool extended = false;
  uint16_t layout = kLayoutFlatPlain;
  std::vector<std::string> shared_keys;  // keys into the shared area
  std::vector<XattrItem> inline_xattrs;
  uint64_t xattr_size = 0;  // ibody bytes, 0 = none
  // Directories: entries in dirent order and the [begin, end) entry range of each block.
  std::vector<NamedChild> dirents;
  std::vector<std::pair<size_t, size_t>> dir_blocks;
  uint64_t size = 0;         // i_size
  uint64_t full_blocks = 0;  // data blocks on the primary device (dirs, long symlinks)
  uint64_t tail = 0;         // bytes stored inline after the inode
  uint32_t startblk = kNullBlock;
  uint32_t chunk_format = 0;
  uint64_t record = 0;  // bytes of inode + xattrs + inline tail or chunk indexes
  uint64_t pos = 0;
};

std::string XattrKey(uint8_t index, std::string_view suffix, std::string_view value) {
  std::string key;
  key.push_back(static_cast<char>(index));
  key.push_back(static_cast<char>(suffix.size()));
  key.append(suffix);
  key.append(value);
  return key;
}

bool NameLess(std::string_view a, std::string_view b) {
  int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
  return c != 0 ? c < 0 : a.size() < b.size();
}

class ImageBuilder {
 public:
  ImageBuilder(const LayerIndex& index, const DeviceLayout& device, const ImageOptions& options)
      : index_(index),
        device_(device),
        options_(options),
        block_(uint64_t{1} << device.block_bits) {}

  absl::StatusOr<std::string> Build(ImageStats* stats) {
    if (device_.block_bits < kMinBlockBits || device_.block_bits > kMaxBlockBits) {
      return absl::InvalidArgumentError(
          fmt::format("EROFS block bits {} not in 9..12", device_.block_bits));
    }
    if (device_.files.size() != index_.inode_count()) {
      return absl::InvalidArgumentError("device layout was not planned from this index");
    }
    if (absl::Status s = OrderInodes(); !s.ok()) return s;
    ChooseEpoch();
    if (absl::Status s = PlanXattrs(); !s.ok()) return s;
    for (InodePlan& p : plans_) {
      if (absl::Status s = PlanData(p); !s.ok()) return s;
    }
    Place();
    std::string image(image_blocks_ * block_, '\0');
    WriteSuperblock(image);
    WriteSharedXattrs(image);
    for (const InodePlan& p : plans_) WriteInode(image, p);
    if (stats != nullptr) {
      *stats = ImageStats{};
      stats->inodes = plans_.size();
      for (const InodePlan& p : plans_)
        ++(p.extended ? stats->extended_inodes : stats->compact_inodes);
      stats->shared_xattrs = shared_.size();
      stats->dropped_xattrs = dropped_xattrs_;
      stats->image_bytes = image.size();
    }
    return image;
  }

 private:
  // Breadth-first from the root; a hardlinked inode is placed at its first name.
  absl::Status OrderInodes() {
    std::vector<bool> seen(index_.inode_count() + 1, false);
    std::deque<Ino> queue = {format::kRootIno};
    seen[format::kRootIno] = true;
    while (!queue.empty()) {
      Ino ino = queue.front();
      queue.pop_front();
      slot_of_[ino] = plans_.size();
      InodePlan& p = plans_.emplace_back();
      p.ino = ino;
      p.attr = *index_.GetAttr(ino);
      for (size_t i = 0; i < index_.ChildCount(ino); ++i) {
        format::DirEntry d = index_.Child(ino, i);
        if (d.name.empty() || d.name.size() > kMaxNameLength) {
          return absl::InvalidArgumentError(
              fmt::format("{}: a name of {} bytes cannot be stored in EROFS", index_.Path(d.ino),
                          d.name.size()));
        }
        if (!seen[d.ino]) {
          seen[d.ino] = true;
          queue.push_back(d.ino);
        }
      }
    }
    return absl::OkStatus();
  }

  bool FitsCompact(const format::InodeAttr& a) const {
    return a.size <= UINT32_MAX && a.uid <= UINT16_MAX && a.gid <= UINT16_MAX &&
           a.nlink <= UINT16_MAX && a.mtime_sec == epoch_ && a.mtime_nsec == fixed_nsec_;
  }

  // Compact inodes all share one (epoch, nsec); the most common mtime makes most of them fit.
  void ChooseEpoch() {
    std::map<std::pair<int64_t, uint32_t>, uint64_t> counts;
    for (const InodePlan& p : plans_) {
      const format::InodeAttr& a = p.attr;
      if (a.mtime_sec >= 0 && a.size <= UINT32_MAX && a.uid <= UINT16_MAX && a.gid <= UINT16_MAX &&
          a.nlink <= UINT16_MAX) {
        ++counts[{a.mtime_sec, a.mtime_nsec}];
      }
    }
    uint64_t best = 0;
    for (const auto& [t, n] : counts) {
      if (n > best) {
        best = n;
        epoch_ = t.first;
        fixed_nsec_ = t.second;
      }
    }
    for (InodePlan& p : plans_) p.extended = !FitsCompact(p.attr);
  }

  absl::Status PlanXattrs() {
    // Pass 1: how many inodes carry each (name, value).
    absl::flat_hash_map<std::string, uint64_t> uses;
    for (const InodePlan& p : plans_) {
      for (const auto& [name, value] : index_.Xattrs(p.ino)) {
        auto [idx, suffix] = SplitXattrName(name);
        if (idx != 0) ++uses[XattrKey(idx, suffix, value)];
      }
    }
    // Pass 2: shared entries (used twice or more) and inline ones.
    for (InodePlan& p : plans_) {
      uint64_t inline_bytes = 0;
      for (const auto& [name, value] : index_.Xattrs(p.ino)) {
        auto [idx, suffix] = SplitXattrName(name);
        if (idx == 0) {
          ++dropped_xattrs_;
          continue;
        }
        if (suffix.size() > 255 || value.size() > UINT16_MAX) {
          return absl::InvalidArgumentError(
              fmt::format("{}: xattr {} ({} value bytes) cannot be stored in EROFS",
                          index_.Path(p.ino), name, value.size()));
        }
        std::string key = XattrKey(idx, suffix, value);
        if (uses[key] >= 2 && p.shared_keys.size() < 255) {
          if (!shared_.contains(key)) {
            shared_.emplace(key, 0);
            shared_order_.push_back({idx, suffix, value});
          }
          p.shared_keys.push_back(std::move(key));
        } else {
          p.inline_xattrs.push_back({idx, suffix, value});
          inline_bytes += p.inline_xattrs.back().EntrySize();
        }
      }
      if (!p.shared_keys.empty() || !p.inline_xattrs.empty()) {
        p.xattr_size = kXattrHeaderSize + 4 * p.shared_keys.size() + inline_bytes;
        if ((p.xattr_size - kXattrHeaderSize) / 4 + 1 > kMaxIbodyXattrCount) {
          return absl::InvalidArgumentError(
              fmt::format("{}: {} bytes of xattrs do not fit an EROFS inode", index_.Path(p.ino),
                          p.xattr_size));
        }
      }
    }
    return absl::OkStatus();
  }

  uint64_t InodeSize(const InodePlan& p) const {
    return p.extended ? kExtendedInodeSize : kCompactInodeSize;
  }

  // Splits `size` bytes of directory/symlink data into full blocks plus an inline tail when
  // inode + xattrs + tail fit one block.
  void PlanFlatData(InodePlan& p) {
    const uint64_t head = InodeSize(p) + p.xattr_size;
    p.tail = p.size % block_;
    if (p.tail != 0 && head + p.tail <= block_) {
      p.layout = kLayoutFlatInline;
      p.full_blocks = p.size / block_;
    } else {
      p.layout = kLayoutFlatPlain;
      p.tail = 0;
      p.full_blocks = (p.size + block_ - 1) / block_;
    }
    p.record = head + p.tail;
  }

  absl::Status PlanData(InodePlan& p) {
    const uint32_t type = p.attr.mode & S_IFMT;
    const uint64_t head = InodeSize(p) + p.xattr_size;
    p.record = head;
    switch (type) {
      case S_IFDIR: {
        p.dirents.push_back({".", p.ino});
        p.dirents.push_back({"..", index_.Parent(p.ino)});
        for (size_t i = 0; i < index_.ChildCount(p.ino); ++i) {
          format::DirEntry d = index_.Child(p.ino, i);
          p.dirents.push_back({d.name, d.ino});
        }
        std::sort(p.dirents.begin(), p.dirents.end(), [](const NamedChild& a, const NamedChild& b) {
          return NameLess(a.name, b.name);
        });
        // The same packing as mkfs.erofs: an entry that does not fit starts a new block; every
        // block but the last counts as full in i_size.
        uint64_t used = 0;  // bytes of the current block
        size_t begin = 0;
        for (size_t i = 0; i < p.dirents.size(); ++i) {
          const uint64_t len = kDirentSize + p.dirents[i].name.size();
          if (used + len > block_) {
            p.dir_blocks.push_back({begin, i});
            begin = i;
            used = 0;
          }
          used += len;
        }
        p.dir_blocks.push_back({begin, p.dirents.size()});
        p.size = (p.dir_blocks.size() - 1) * block_ + used;
        PlanFlatData(p);
        return absl::OkStatus();
      }
      case S_IFLNK:
        p.size = index_.SymlinkTarget(p.ino).size();
        if (p.size == 0) {
          return absl::InvalidArgumentError(
              fmt::format("{}: empty symlink target", index_.Path(p.ino)));
        }
        PlanFlatData(p);
        return absl::OkStatus();
      case S_IFREG: {
        p.size = p.attr.size;
        const FileChunks& fc = device_.files[p.ino - 1];
        if (p.size == 0) {
          p.layout = kLayoutFlatPlain;
          return absl::OkStatus();
        }
        const uint64_t chunks = fc.chunk_bits == 0 ? 0 : ((p.size - 1) >> fc.chunk_bits) + 1;
        if (fc.chunk_bits < device_.block_bits ||
            fc.chunk_bits > device_.block_bits + kChunkFormatBlkBitsMask ||
            chunks != fc.blocks.size()) {
          return absl::InvalidArgumentError(
              fmt::format("{}: device layout has {} chunks of 2^{} bytes for {} bytes",
                          index_.Path(p.ino), fc.blocks.size(), fc.chunk_bits, p.size));
        }
        p.layout = kLayoutChunkBased;
        p.chunk_format = kChunkFormatIndexes | (fc.chunk_bits - device_.block_bits);
        p.record = RoundUp(head, kChunkIndexSize) + chunks * kChunkIndexSize;
        any_chunked_ = true;
        return absl::OkStatus();
      }
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
      case S_IFSOCK:
        p.size = 0;
        return absl::OkStatus();
      default:
        return absl::InvalidArgumentError(
            fmt::format("{}: file type {:o} cannot be stored", index_.Path(p.ino), type));
    }
  }

  // Assigns inode positions (hence nids), then the shared xattr area and the data blocks.
  void Place() {
    uint64_t cur = kMetaStart;
    for (InodePlan& p : plans_) {
      // The inode with its xattrs and inline tail stays inside one block when it can (the
      // kernel requires it for inline data; it also keeps extended inodes from straddling).
      const uint64_t fixed = InodeSize(p) + p.xattr_size + p.tail;
      if (cur % block_ + std::min(fixed, block_) > block_) cur = RoundUp(cur, block_);
      p.pos = cur;
      cur = RoundUp(cur + p.record, kInodeSlotSize);
    }
    cur = RoundUp(cur, block_);
    xattr_blkaddr_ = shared_order_.empty() ? 0 : cur / block_;
    for (const XattrItem& x : shared_order_) {
      shared_[XattrKey(x.index, x.suffix, x.value)] = (cur - xattr_blkaddr_ * block_) / 4;
      shared_pos_.push_back(cur);
      cur += x.EntrySize();
    }
    uint64_t next_block = RoundUp(cur, block_) / block_;
    for (InodePlan& p : plans_) {
      if (p.full_blocks == 0) continue;
      p.startblk = static_cast<uint32_t>(next_block);
      next_block += p.full_blocks;
    }
    image_blocks_ = next_block;
  }

  uint64_t NidOf(Ino ino) const { return plans_[slot_of_.at(ino)].pos / kInodeSlotSize; }

  void WriteSuperblock(std::string& img) const {
    const uint64_t s = kSuperOffset;
    Put32(img, s + sb::kMagic, kMagic);
    img[s + sb::kBlockBits] = static_cast<char>(device_.block_bits);
    Put16(img, s + sb::kRootNid, static_cast<uint16_t>(NidOf(format::kRootIno)));
    Put64(img, s + sb::kInodeCount, plans_.size());
    Put64(img, s + sb::kEpoch, static_cast<uint64_t>(epoch_));
    Put32(img, s + sb::kFixedNsec, fixed_nsec_);
    Put32(img, s + sb::kBlocks, static_cast<uint32_t>(image_blocks_));
    Put32(img, s + sb::kMetaBlkAddr, 0);
    Put32(img, s + sb::kXattrBlkAddr, static_cast<uint32_t>(xattr_blkaddr_));
    std::memcpy(img.data() + s + sb::kUuid, options_.uuid.data(), options_.uuid.size());
    std::memcpy(img.data() + s + sb::kVolumeName, "lazypull", 8);
    Put32(img, s + sb::kFeatureIncompat,
          kIncompatDeviceTable | (any_chunked_ ? kIncompatChunkedFile : 0));
    Put16(img, s + sb::kExtraDevices, 1);
    Put16(img, s + sb::kDevtSlotOff, static_cast<uint16_t>(kDeviceSlotOffset / kDeviceSlotSize));
    const uint64_t d = kDeviceSlotOffset;
    std::string tag = options_.device_tag.substr(0, 64);
    std::memcpy(img.data() + d + devslot::kTag, tag.data(), tag.size());
    Put32(img, d + devslot::kBlocks, static_cast<uint32_t>(device_.device_blocks));
    Put32(img, d + devslot::kMappedBlkAddr, 0);
  }

  static uint64_t WriteXattrEntry(std::string& img, uint64_t at, const XattrItem& x) {
    img[at] = static_cast<char>(x.suffix.size());
    img[at + 1] = static_cast<char>(x.index);
    Put16(img, at + 2, static_cast<uint16_t>(x.value.size()));
    std::memcpy(img.data() + at + 4, x.suffix.data(), x.suffix.size());
    std::memcpy(img.data() + at + 4 + x.suffix.size(), x.value.data(), x.value.size());
    return at + x.EntrySize();
  }

  void WriteSharedXattrs(std::string& img) const {
    for (size_t i = 0; i < shared_order_.size(); ++i) {
      WriteXattrEntry(img, shared_pos_[i], shared_order_[i]);
    }
  }

  void WriteInode(std::string& img, const InodePlan& p) const {
    const format::InodeAttr& a = p.attr;
    const uint64_t at = p.pos;
    const uint16_t version = p.extended ? kVersionExtended : kVersionCompact;
    const uint16_t xattr_count =
        p.xattr_size == 0 ? 0 : static_cast<uint16_t>((p.xattr_size - kXattrHeaderSize) / 4 + 1);
    uint32_t iu = 0;
    switch (a.mode & S_IFMT) {
      case S_IFCHR:
      case S_IFBLK:
        iu = EncodeDev(a.dev_major, a.dev_minor);
        break;
      case S_IFIFO:
      case S_IFSOCK:
        break;
      case S_IFREG:
        iu = p.layout == kLayoutChunkBased ? p.chunk_format : kNullBlock;
        break;
      default:
        iu = p.startblk;
    }
    if (p.extended) {
      Put16(img, at + extended::kFormat, static_cast<uint16_t>(version | (p.layout << 1)));
      Put16(img, at + extended::kXattrCount, xattr_count);
      Put16(img, at + extended::kMode, static_cast<uint16_t>(a.mode));
      Put64(img, at + extended::kSize, p.size);
      Put32(img, at + extended::kU, iu);
      Put32(img, at + extended::kIno, p.ino);
      Put32(img, at + extended::kUid, a.uid);
      Put32(img, at + extended::kGid, a.gid);
      Put64(img, at + extended::kMtime, static_cast<uint64_t>(a.mtime_sec));
      Put32(img, at + extended::kMtimeNsec, a.mtime_nsec);
      Put32(img, at + extended::kNlink, a.nlink);
    } else {
      Put16(img, at + compact::kFormat, static_cast<uint16_t>(version | (p.layout << 1)));
      Put16(img, at + compact::kXattrCount, xattr_count);
      Put16(img, at + compact::kMode, static_cast<uint16_t>(a.mode));
      Put16(img, at + compact::kNlink, static_cast<uint16_t>(a.nlink));
      Put32(img, at + compact::kSize, static_cast<uint32_t>(p.size));
      Put32(img, at + compact::kMtime, 0);  // == epoch
      Put32(img, at + compact::kU, iu);
      Put32(img, at + compact::kIno, p.ino);
      Put16(img, at + compact::kUid, static_cast<uint16_t>(a.uid));
      Put16(img, at + compact::kGid, static_cast<uint16_t>(a.gid));
    }
    uint64_t cur = at + InodeSize(p);
    if (p.xattr_size != 0) {
      img[cur + 4] = static_cast<char>(p.shared_keys.size());
      cur += kXattrHeaderSize;
      for (const std::string& key : p.shared_keys) {
        Put32(img, cur, static_cast<uint32_t>(shared_.at(key)));
        cur += 4;
      }
      for (const XattrItem& x : p.inline_xattrs) cur = WriteXattrEntry(img, cur, x);
    }
    switch (a.mode & S_IFMT) {
      case S_IFDIR:
      case S_IFLNK: {
        std::string data =
            (a.mode & S_IFMT) == S_IFDIR ? DirData(p) : std::string(index_.SymlinkTarget(p.ino));
        data.resize(p.size);
        if (p.full_blocks > 0) {
          const uint64_t bytes = std::min<uint64_t>(p.full_blocks * block_, p.size);
          std::memcpy(img.data() + uint64_t{p.startblk} * block_, data.data(), bytes);
        }
        if (p.tail != 0) {
          std::memcpy(img.data() + cur, data.data() + p.full_blocks * block_, p.tail);
        }
        break;
      }
      case S_IFREG:
        if (p.layout == kLayoutChunkBased) {
          cur = RoundUp(cur, kChunkIndexSize);
          for (uint32_t blk : device_.files[p.ino - 1].blocks) {
            Put16(img, cur, 0);
            Put16(img, cur + 2, blk == kNullBlock ? 0 : 1);  // device_id: the data device
            Put32(img, cur + 4, blk);
            cur += kChunkIndexSize;
          }
        }
        break;
      default:
        break;
    }
  }

  // The directory's bytes (i_size long): per block, dirents then names, zero padded.
  std::string DirData(const InodePlan& p) const {
    std::string out(p.dir_blocks.size() * block_, '\0');
    for (size_t b = 0; b < p.dir_blocks.size(); ++b) {
      const auto [begin, end] = p.dir_blocks[b];
      const uint64_t base = b * block_;
      uint64_t nameoff = (end - begin) * kDirentSize;
      for (size_t i = begin; i < end; ++i) {
        const NamedChild& e = p.dirents[i];
        const uint64_t de = base + (i - begin) * kDirentSize;
        Put64(out, de, NidOf(e.ino));
        Put16(out, de + 8, static_cast<uint16_t>(nameoff));
        out[de + 10] = static_cast<char>(FileTypeOfMode(index_.GetAttr(e.ino)->mode));
        std::memcpy(out.data() + base + nameoff, e.name.data(), e.name.size());
        nameoff += e.name.size();
      }
    }
    return out;
  }

  const LayerIndex& index_;
  const DeviceLayout& device_;
  const ImageOptions& options_;
  const uint64_t block_;
  std::vector<InodePlan> plans_;
  absl::flat_hash_map<Ino, size_t> slot_of_;
  int64_t epoch_ = 0;
  uint32_t fixed_nsec_ = 0;
  absl::flat_hash_map<std::string, uint64_t> shared_;  // key → shared xattr id
  std::vector<XattrItem> shared_order_;
  std::vector<uint64_t> shared_pos_;
  uint64_t xattr_blkaddr_ = 0;
  uint64_t dropped_xattrs_ = 0;
  uint64_t image_blocks_ = 0;
  bool any_chunked_ = false;
};

}  // namespace

uint8_t FileTypeOfMode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return kFtRegular;
    case S_IFDIR:
      return kFtDirectory;
    case S_IFCHR:
      return kFtCharDevice;
    case S_IFBLK:
      return kFtBlockDevice;
    case S_IFIFO:
      return kFtFifo;
    case S_IFSOCK:
      return kFtSocket;
    case S_IFLNK:
      return kFtSymlink;
    default:
      return kFtUnknown;
  }
}

std::pair<uint8_t, std::string_view> SplitXattrName(std::string_view name) {
  // Whole names first: the ACL indexes have an empty suffix.
  if (name == "system.posix_acl_access") return {kXattrIndexPosixAclAccess, ""};
  if (name == "system.posix_acl_default") return {kXattrIndexPosixAclDefault, ""};
  for (uint8_t index : {kXattrIndexUser, kXattrIndexTrusted, kXattrIndexSecurity}) {
    std::string_view prefix = XattrPrefix(index);
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix) {
      return {index, name.substr(prefix.size())};
    }
  }
  return {0, name};
}

std::string_view XattrPrefix(uint8_t index) {
  switch (index) {
    case kXattrIndexUser:
      return "user.";
    case kXattrIndexPosixAclAccess:
      return "system.posix_acl_access";
    case kXattrIndexPosixAclDefault:
      return "system.posix_acl_default";
    case kXattrIndexTrusted:
      return "trusted.";
    case kXattrIndexSecurity:
      return "security.";
    default:
      return "";
  }
}

absl::StatusOr<std::string> BuildErofsImage(const LayerIndex& index, const DeviceLayout& device,
                                            const ImageOptions& options, ImageStats* stats) {
  return ImageBuilder(index, device, options).Build(stats);
}

absl::Status WriteErofsImage(const LayerIndex& index, const DeviceLayout& device,
                             const ImageOptions& options, const std::string& path,
                             ImageStats* stats) {
  absl::StatusOr<std::string> image = BuildErofsImage(index, device, options, stats);
  if (!image.ok()) return image.status();
  // 0600: an image lists a private image's files (the kernel mounts it as root).
  return WriteFileAtomically(path, *image, 0600);
}

}  // namespace lazypull::mount::erofs
