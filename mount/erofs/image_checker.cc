#include "mount/erofs/image_checker.h"

#include <sys/stat.h>

#include <cstring>
#include <set>
#include <utility>

#include "fmt/format.h"
#include "mount/erofs/erofs_format.h"

namespace lazypull::mount::erofs {
namespace {

class Checker {
 public:
  explicit Checker(std::string_view img) : img_(img) {}

  absl::StatusOr<CheckedImage> Run() {
    if (img_.size() < kSuperOffset + kSuperSize) return Fail("image smaller than a superblock");
    const uint64_t s = kSuperOffset;
    if (Get32(img_, s + sb::kMagic) != kMagic) return Fail("bad superblock magic");
    out_.block_bits = static_cast<uint8_t>(img_[s + sb::kBlockBits]);
    if (out_.block_bits < kMinBlockBits || out_.block_bits > kMaxBlockBits) {
      return Fail(fmt::format("block bits {} not in 9..12", out_.block_bits));
    }
    block_ = uint64_t{1} << out_.block_bits;
    if (img_[s + sb::kExtSlots] != 0) return Fail("superblock extension slots are set");
    const uint32_t incompat = Get32(img_, s + sb::kFeatureIncompat);
    if ((incompat & ~(kIncompatChunkedFile | kIncompatDeviceTable)) != 0) {
      return Fail(fmt::format("unexpected incompat features {:#x}", incompat));
    }
    if (Get32(img_, s + sb::kFeatureCompat) != 0 || Get32(img_, s + sb::kChecksum) != 0) {
      return Fail("compat features or checksum set");
    }
    const uint64_t blocks = Get32(img_, s + sb::kBlocks);
    if (blocks * block_ != img_.size()) {
      return Fail(
          fmt::format("superblock says {} blocks, image has {} bytes", blocks, img_.size()));
    }
    meta_ = uint64_t{Get32(img_, s + sb::kMetaBlkAddr)} * block_;
    xattr_ = uint64_t{Get32(img_, s + sb::kXattrBlkAddr)} * block_;
    epoch_ = static_cast<int64_t>(Get64(img_, s + sb::kEpoch));
    fixed_nsec_ = Get32(img_, s + sb::kFixedNsec);
    if (fixed_nsec_ >= 1000000000) return Fail("fixed nsec out of range");
    if (Get16(img_, s + sb::kComprAlgs) != 0 || img_[s + sb::kDirBlkBits] != 0) {
      return Fail("compression or dir block bits set");
    }
    if (!(incompat & kIncompatDeviceTable) || Get16(img_, s + sb::kExtraDevices) != 1) {
      return Fail("the image must have a device table with exactly one extra device");
    }
    const uint64_t slot = uint64_t{Get16(img_, s + sb::kDevtSlotOff)} * kDeviceSlotSize;
    if (slot < kSuperOffset + kSuperSize || slot + kDeviceSlotSize > img_.size()) {
      return Fail("device slot outside the image or overlapping the superblock");
    }
    std::string_view tag = img_.substr(slot + devslot::kTag, 64);
    out_.device_tag = std::string(tag.substr(0, std::min(tag.find('\0'), tag.size())));
    out_.device_blocks = Get32(img_, slot + devslot::kBlocks);
    if (Get32(img_, slot + devslot::kMappedBlkAddr) != 0) return Fail("device 1 is mapped");
    chunked_allowed_ = (incompat & kIncompatChunkedFile) != 0;

    const uint64_t root = Get16(img_, s + sb::kRootNid);
    absl::StatusOr<CheckedInode> r = ReadInode(root);
    if (!r.ok()) return r.status();
    if (!S_ISDIR(r->mode)) return Fail("the root is not a directory");
    if (absl::Status st = Walk("", *r, root); !st.ok()) return st;
    for (const auto& [path, f] : out_.files) {
      if (!S_ISDIR(f.mode) && f.nlink != names_of_[f.nid]) {
        return FailNid(f.nid, fmt::format("nlink {} but {} names", f.nlink, names_of_[f.nid]));
      }
    }
    out_.inode_count = Get64(img_, s + sb::kInodeCount);
    if (out_.inode_count != seen_nids_.size()) {
      return Fail(fmt::format("superblock counts {} inodes, {} are reachable", out_.inode_count,
                              seen_nids_.size()));
    }
    return std::move(out_);
  }

 private:
  absl::Status Fail(std::string what) const {
    return absl::DataLossError(fmt::format("EROFS image check: {}", what));
  }
  absl::Status FailNid(uint64_t nid, std::string what) const {
    return absl::DataLossError(fmt::format("EROFS image check: nid {}: {}", nid, what));
  }

  // Where an inode's data starts (after inode + xattrs) and its layout facts.
  struct Raw {
    uint64_t pos = 0;
    uint64_t after_xattrs = 0;
    uint16_t layout = 0;
    uint32_t iu = 0;
  };

  absl::StatusOr<CheckedInode> ReadInode(uint64_t nid) {
    Raw raw;
    CheckedInode n;
    n.nid = nid;
    if (nid > (img_.size() - meta_) / kInodeSlotSize) return FailNid(nid, "beyond the image");
    raw.pos = meta_ + nid * kInodeSlotSize;
    if (raw.pos + kCompactInodeSize > img_.size()) return FailNid(nid, "beyond the image");
    const uint16_t format = Get16(img_, raw.pos);
    if (format & ~uint16_t{0xF}) return FailNid(nid, fmt::format("bad i_format {:#x}", format));
    n.extended = (format & 1) != 0;
    raw.layout = (format >> 1) & 7;
    const uint64_t isize = n.extended ? kExtendedInodeSize : kCompactInodeSize;
    if (raw.pos % block_ + isize > block_) return FailNid(nid, "inode straddles a block");
    if (raw.pos + isize > img_.size()) return FailNid(nid, "beyond the image");
    uint16_t xcount;
    if (n.extended) {
      xcount = Get16(img_, raw.pos + extended::kXattrCount);
      n.mode = Get16(img_, raw.pos + extended::kMode);
      n.size = Get64(img_, raw.pos + extended::kSize);
      raw.iu = Get32(img_, raw.pos + extended::kU);
      n.uid = Get32(img_, raw.pos + extended::kUid);
      n.gid = Get32(img_, raw.pos + extended::kGid);
      n.mtime_sec = static_cast<int64_t>(Get64(img_, raw.pos + extended::kMtime));
      n.mtime_nsec = Get32(img_, raw.pos + extended::kMtimeNsec);
      n.nlink = Get32(img_, raw.pos + extended::kNlink);
      if (n.mtime_nsec >= 1000000000) return FailNid(nid, "mtime nsec out of range");
    } else {
      xcount = Get16(img_, raw.pos + compact::kXattrCount);
      n.mode = Get16(img_, raw.pos + compact::kMode);
      n.nlink = Get16(img_, raw.pos + compact::kNlink);
      n.size = Get32(img_, raw.pos + compact::kSize);
      raw.iu = Get32(img_, raw.pos + compact::kU);
      n.uid = Get16(img_, raw.pos + compact::kUid);
      n.gid = Get16(img_, raw.pos + compact::kGid);
      n.mtime_sec = epoch_ + Get32(img_, raw.pos + compact::kMtime);
      n.mtime_nsec = fixed_nsec_;
    }
    if (n.nlink == 0) return FailNid(nid, "nlink is 0");
    raw.after_xattrs = raw.pos + isize;
    if (xcount != 0) {
      if (xcount == 1) return FailNid(nid, "xattr ibody with a header only");
      const uint64_t ibody = kXattrHeaderSize + 4 * (uint64_t{xcount} - 1);
      if (absl::Status st = ReadXattrs(nid, raw.after_xattrs, ibody, &n); !st.ok()) return st;
      raw.after_xattrs += ibody;
    }
    if (raw.after_xattrs > img_.size()) return FailNid(nid, "xattrs beyond the image");
    const uint32_t type = n.mode & S_IFMT;
    switch (type) {
      case S_IFDIR:
      case S_IFLNK:
        if (raw.layout != kLayoutFlatPlain && raw.layout != kLayoutFlatInline) {
          return FailNid(nid, fmt::format("layout {} for a dir/symlink", raw.layout));
        }
        break;
      case S_IFREG:
        if (!(raw.layout == kLayoutChunkBased || (raw.layout == kLayoutFlatPlain && n.size == 0))) {
          return FailNid(
              nid, fmt::format("layout {} for a regular file of {} bytes", raw.layout, n.size));
        }
        if (raw.layout == kLayoutChunkBased) {
          if (absl::Status st = ReadChunks(nid, raw, &n); !st.ok()) return st;
        }
        break;
      case S_IFCHR:
      case S_IFBLK:
        DecodeDev(raw.iu, &n.rdev_major, &n.rdev_minor);
        [[fallthrough]];
      case S_IFIFO:
      case S_IFSOCK:
        if (raw.layout != kLayoutFlatPlain || n.size != 0) {
          return FailNid(nid, "special file with data");
        }
        break;
      default:
        return FailNid(nid, fmt::format("bad mode {:o}", n.mode));
    }
    raws_[nid] = raw;
    return n;
  }

  absl::Status ReadXattrs(uint64_t nid, uint64_t at, uint64_t ibody, CheckedInode* n) {
    if (at + ibody > img_.size()) return FailNid(nid, "xattr ibody beyond the image");
    const uint64_t shared = static_cast<uint8_t>(img_[at + 4]);
    if (kXattrHeaderSize + 4 * shared > ibody) return FailNid(nid, "too many shared xattrs");
    for (uint64_t i = 0; i < shared; ++i) {
      const uint64_t id = Get32(img_, at + kXattrHeaderSize + 4 * i);
      uint64_t entry = xattr_ + 4 * id;
      if (xattr_ == 0 || entry + kXattrEntryHeaderSize > img_.size()) {
        return FailNid(nid, fmt::format("shared xattr id {} outside the image", id));
      }
      absl::StatusOr<uint64_t> st = ReadXattrEntry(nid, entry, img_.size(), n);
      if (!st.ok()) return st.status();
    }
    uint64_t cur = at + kXattrHeaderSize + 4 * shared;
    const uint64_t end = at + ibody;
    while (cur < end) {
      absl::StatusOr<uint64_t> next = ReadXattrEntry(nid, cur, end, n);
      if (!next.ok()) return next.status();
      cur = *next;
    }
    if (cur != end) return FailNid(nid, "xattr entries overrun the ibody");
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> ReadXattrEntry(uint64_t nid, uint64_t at, uint64_t end,
                                          CheckedInode* n) {
    if (at + kXattrEntryHeaderSize > end) return FailNid(nid, "truncated xattr entry");
    const uint64_t name_len = static_cast<uint8_t>(img_[at]);
    const uint8_t index = static_cast<uint8_t>(img_[at + 1]);
    const uint64_t value_len = Get16(img_, at + 2);
    const uint64_t size = RoundUp(kXattrEntryHeaderSize + name_len + value_len, 4);
    if (at + size > end) return FailNid(nid, "xattr entry beyond its area");
    std::string_view prefix = XattrPrefix(index);
    if (prefix.empty()) return FailNid(nid, fmt::format("xattr name index {}", index));
    const bool acl = index == kXattrIndexPosixAclAccess || index == kXattrIndexPosixAclDefault;
    if ((acl && name_len != 0) || (!acl && name_len == 0)) {
      return FailNid(nid, "xattr name length does not match its index");
    }
    std::string name = std::string(prefix) + std::string(img_.substr(at + 4, name_len));
    if (!n->xattrs.emplace(name, std::string(img_.substr(at + 4 + name_len, value_len))).second) {
      return FailNid(nid, fmt::format("xattr {} twice", name));
    }
    return at + size;
  }

  absl::Status ReadChunks(uint64_t nid, const Raw& raw, CheckedInode* n) {
    if (!chunked_allowed_) return FailNid(nid, "chunk-based file without the CHUNKED feature");
    const uint32_t format = raw.iu & 0xFFFF;
    if ((format & ~uint32_t{kChunkFormatIndexes | kChunkFormatBlkBitsMask}) != 0 ||
        !(format & kChunkFormatIndexes)) {
      return FailNid(nid, fmt::format("chunk format {:#x}", format));
    }
    n->chunk_bits = out_.block_bits + (format & kChunkFormatBlkBitsMask);
    if (n->size == 0) return FailNid(nid, "chunk-based empty file");
    const uint64_t count = ((n->size - 1) >> n->chunk_bits) + 1;
    uint64_t at = RoundUp(raw.after_xattrs, kChunkIndexSize);
    if (count > (img_.size() - std::min<uint64_t>(at, img_.size())) / kChunkIndexSize) {
      return FailNid(nid, "chunk indexes beyond the image");
    }
    for (uint64_t i = 0; i < count; ++i, at += kChunkIndexSize) {
      const uint16_t hi = Get16(img_, at);
      const uint16_t dev = Get16(img_, at + 2);
      const uint32_t blk = Get32(img_, at + 4);
      if (hi != 0) return FailNid(nid, "48-bit chunk address");
      if (blk == kNullBlock) {
        if (dev != 0) return FailNid(nid, "hole chunk on a device");
      } else {
        if (dev != 1) return FailNid(nid, fmt::format("chunk on device {}", dev));
        const uint64_t len =
            std::min<uint64_t>(uint64_t{1} << n->chunk_bits, n->size - (i << n->chunk_bits));
        const uint64_t blocks = (len + block_ - 1) / block_;
        if (uint64_t{blk} + blocks > out_.device_blocks) {
          return FailNid(nid, fmt::format("chunk {} at block {} runs past device 1 ({} blocks)", i,
                                          blk, out_.device_blocks));
        }
      }
      n->chunk_blocks.push_back(blk);
    }
    return absl::OkStatus();
  }

  // Bytes [0, size) of a FLAT_PLAIN / FLAT_INLINE inode.
  absl::StatusOr<std::string> FlatData(uint64_t nid, const Raw& raw, uint64_t size) {
    const uint64_t nblocks = (size + block_ - 1) / block_;
    const bool inline_tail = raw.layout == kLayoutFlatInline;
    const uint64_t full = inline_tail ? size / block_ : nblocks;
    if (inline_tail && size % block_ == 0) return FailNid(nid, "inline layout without a tail");
    std::string out;
    if (full > 0) {
      const uint64_t start = uint64_t{raw.iu} * block_;
      if (raw.iu == kNullBlock || start + full * block_ > img_.size()) {
        return FailNid(nid, "data blocks beyond the image");
      }
      out.append(img_.substr(start, std::min(full * block_, size)));
    }
    if (inline_tail) {
      const uint64_t tail = size - full * block_;
      if (raw.pos % block_ + (raw.after_xattrs - raw.pos) + tail > block_) {
        return FailNid(nid, "inline data crosses a block boundary");
      }
      out.append(img_.substr(raw.after_xattrs, tail));
    }
    return out;
  }

  absl::Status Walk(const std::string& path, CheckedInode dir, uint64_t parent_nid) {
    const uint64_t nid = dir.nid;
    if (!seen_nids_.insert(nid).second) return FailNid(nid, "directory reachable twice");
    absl::StatusOr<std::string> data = FlatData(nid, raws_.at(nid), dir.size);
    if (!data.ok()) return data.status();
    out_.files[path] = dir;
    std::string prev;
    bool first = true, dot = false, dotdot = false;
    uint32_t subdirs = 0;
    for (uint64_t base = 0; base < data->size(); base += block_) {
      std::string_view blk = std::string_view(*data).substr(base, block_);
      if (blk.size() < kDirentSize) return FailNid(nid, "truncated dirent block");
      const uint64_t first_off = Get16(blk, 8);
      if (first_off < kDirentSize || first_off >= block_ || first_off % kDirentSize != 0 ||
          first_off > blk.size()) {
        return FailNid(nid, fmt::format("bad first nameoff {}", first_off));
      }
      const uint64_t count = first_off / kDirentSize;
      for (uint64_t i = 0; i < count; ++i) {
        const uint64_t off = Get16(blk, i * kDirentSize + 8);
        uint64_t end;
        if (i + 1 < count) {
          end = Get16(blk, (i + 1) * kDirentSize + 8);
        } else {
          end = off;
          while (end < blk.size() && blk[end] != '\0') ++end;
        }
        if (off > end || end > blk.size()) return FailNid(nid, "bad dirent nameoff");
        std::string name(blk.substr(off, end - off));
        if (name.empty() || name.size() > kMaxNameLength || name.find('/') != std::string::npos) {
          return FailNid(nid, fmt::format("bad dirent name \"{}\"", name));
        }
        if (!first && !(prev < name)) {
          return FailNid(nid, fmt::format("dirents not sorted: \"{}\" after \"{}\"", name, prev));
        }
        first = false;
        prev = name;
        const uint64_t child = Get64(blk, i * kDirentSize);
        const uint8_t ftype = static_cast<uint8_t>(blk[i * kDirentSize + 10]);
        if (name == ".") {
          if (dot || child != nid) return FailNid(nid, "bad `.` entry");
          dot = true;
          continue;
        }
        if (name == "..") {
          if (dotdot || child != parent_nid) return FailNid(nid, "bad `..` entry");
          dotdot = true;
          continue;
        }
        absl::StatusOr<CheckedInode> c = ReadInode(child);
        if (!c.ok()) return c.status();
        if (FileTypeOfMode(c->mode) != ftype) {
          return FailNid(nid, fmt::format("file type of \"{}\" does not match its inode", name));
        }
        const std::string child_path = path.empty() ? name : path + "/" + name;
        if (S_ISDIR(c->mode)) {
          ++subdirs;
          if (absl::Status st = Walk(child_path, *c, nid); !st.ok()) return st;
          continue;
        }
        if (S_ISLNK(c->mode)) {
          if (c->size == 0 || c->size > 4095) return FailNid(child, "bad symlink size");
          absl::StatusOr<std::string> target = FlatData(child, raws_.at(child), c->size);
          if (!target.ok()) return target.status();
          c->symlink_target = *target;
        }
        seen_nids_.insert(child);
        ++names_of_[child];
        out_.files[child_path] = *c;
      }
    }
    if (!dot || !dotdot) return FailNid(nid, "`.` or `..` missing");
    if (dir.nlink != 2 + subdirs) {
      return FailNid(nid,
                     fmt::format("directory nlink {} with {} subdirectories", dir.nlink, subdirs));
    }
    return absl::OkStatus();
  }

  std::string_view img_;
  CheckedImage out_;
  uint64_t block_ = 4096;
  uint64_t meta_ = 0;
  uint64_t xattr_ = 0;
  int64_t epoch_ = 0;
  uint32_t fixed_nsec_ = 0;
  bool chunked_allowed_ = false;
  std::map<uint64_t, Raw> raws_;
  std::set<uint64_t> seen_nids_;
  std::map<uint64_t, uint32_t> names_of_;  // non-directories: names seen per nid
};

}  // namespace

absl::StatusOr<CheckedImage> CheckErofsImage(std::string_view image) {
  return Checker(image).Run();
}

}  // namespace lazypull::mount::erofs
