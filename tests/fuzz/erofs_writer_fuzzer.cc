// libFuzzer target: arbitrary VALID layer indexes (built from the input through
// LayerIndexBuilder: random trees of dirs, files with data and hole chunks, symlinks, hardlinks,
// devices, fifos, whiteouts, opaque dirs, xattrs, large ids/sizes, nanosecond mtimes) written as
// EROFS images with the lazy-blob layout (512 B..4 KiB blocks) and the tar layout, then read back
// by CheckErofsImage (the fsck.erofs invariants) and compared with the index: every name, mode,
// owner, nlink, mtime, rdev, xattr, symlink target and chunk map must survive. Any difference
// aborts.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "fetcher/format/layer_index_builder.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/erofs_format.h"
#include "mount/erofs/image_checker.h"
#include "mount/erofs/image_writer.h"

namespace {

using namespace lazypull;
using namespace lazypull::format;
using namespace lazypull::mount::erofs;

constexpr const char* kXattrNames[] = {
    "user.a",           "user.long.name.for.an.attribute", "trusted.overlay.origin",
    "security.selinux", "system.posix_acl_access",         "trusted.x"};

std::string Name(FuzzedDataProvider& in) {
  std::string n = in.ConsumeRandomLengthString(40);
  std::string out;
  for (char c : n) {
    if (c != '/' && c != '\0') out.push_back(c);
  }
  if (out.empty() || out == "." || out == "..") out = "n";
  return out;
}

EntryMeta Meta(FuzzedDataProvider& in) {
  EntryMeta m;
  m.permissions = in.ConsumeIntegral<uint32_t>() & 07777;
  m.uid = in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() : in.ConsumeIntegralInRange(0, 3);
  m.gid = in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() : 0;
  m.mtime_sec = in.ConsumeBool() ? 1700000000 : in.ConsumeIntegral<int32_t>();
  m.mtime_nsec = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<uint32_t>(0, 999999999);
  const int nx = in.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < nx; ++i) {
    const char* name = kXattrNames[in.ConsumeIntegralInRange<size_t>(0, 5)];
    bool dup = false;
    for (const auto& [n, v] : m.xattrs) dup |= n == name;
    if (dup) continue;
    m.xattrs.push_back(
        {name, in.ConsumeBool() ? std::string("v") : in.ConsumeRandomLengthString(600)});
  }
  return m;
}

std::vector<Chunk> Chunks(FuzzedDataProvider& in, uint64_t size, uint64_t* blob_pos) {
  std::vector<Chunk> out;
  uint64_t off = 0;
  while (off < size) {
    uint64_t len = std::min<uint64_t>(size - off, in.ConsumeIntegralInRange<uint64_t>(1, 1 << 22));
    if (out.size() > 64) len = size - off;
    Chunk c;
    c.file_offset = off;
    c.length = len;
    c.has_digest = true;
    c.digest[0] = static_cast<uint8_t>(out.size());
    if (in.ConsumeIntegralInRange(0, 3) == 0) {
      c.compression = ChunkCompression::kZeros;
    } else {
      c.compression = ChunkCompression::kZstdFrame;
      c.compressed_offset = *blob_pos;
      c.compressed_length = 100;
      *blob_pos += 100;
    }
    out.push_back(c);
    off += len;
  }
  return out;
}

void Check(bool ok) {
  if (!ok) abort();
}

// Every name of the index → ino, breadth-first.
std::map<std::string, Ino> Names(const LayerIndex& index) {
  std::map<std::string, Ino> out;
  std::vector<std::pair<std::string, Ino>> todo = {{"", kRootIno}};
  for (size_t i = 0; i < todo.size(); ++i) {
    auto [path, ino] = todo[i];
    out[path] = ino;
    for (size_t c = 0; c < index.ChildCount(ino); ++c) {
      DirEntry d = index.Child(ino, c);
      todo.push_back(
          {path.empty() ? std::string(d.name) : path + "/" + std::string(d.name), d.ino});
    }
  }
  return out;
}

void CompareWithIndex(const CheckedImage& img, const LayerIndex& index,
                      const DeviceLayout& device) {
  std::map<std::string, Ino> names = Names(index);
  Check(img.files.size() == names.size());
  Check(img.inode_count == index.inode_count());
  for (const auto& [path, ino] : names) {
    auto it = img.files.find(path);
    Check(it != img.files.end());
    const CheckedInode& f = it->second;
    const InodeAttr a = *index.GetAttr(ino);
    Check(f.mode == a.mode && f.uid == a.uid && f.gid == a.gid && f.nlink == a.nlink);
    Check(f.mtime_sec == a.mtime_sec && f.mtime_nsec == a.mtime_nsec);
    Check(f.rdev_major == a.dev_major && f.rdev_minor == a.dev_minor);
    std::map<std::string, std::string> xattrs;
    for (const auto& [n, v] : index.Xattrs(ino)) xattrs.emplace(n, v);
    Check(f.xattrs == xattrs);
    if (S_ISLNK(a.mode)) Check(f.symlink_target == index.SymlinkTarget(ino));
    if (S_ISREG(a.mode)) {
      Check(f.size == a.size);
      const FileChunks& fc = device.files[ino - 1];
      if (a.size > 0) Check(f.chunk_bits == fc.chunk_bits && f.chunk_blocks == fc.blocks);
      for (size_t c = 0; c < fc.blocks.size(); ++c) {
        const uint64_t off = uint64_t{c} << fc.chunk_bits;
        const uint64_t len = std::min<uint64_t>(uint64_t{1} << fc.chunk_bits, a.size - off);
        Check((fc.blocks[c] == kNullBlock) == IsHoleRange(index, ino, off, len));
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  LayerIndexBuilder b(in.ConsumeBool() ? LayerFormat::kZstdChunked : LayerFormat::kEstargz, {});
  std::vector<std::string> dirs = {""};
  std::vector<std::string> files;
  uint64_t blob_pos = 0;
  const int entries = in.ConsumeIntegralInRange(0, 300);
  for (int i = 0; i < entries && in.remaining_bytes() > 0; ++i) {
    const std::string& parent = dirs[in.ConsumeIntegralInRange<size_t>(0, dirs.size() - 1)];
    std::string path = (parent.empty() ? "" : parent + "/") + Name(in);
    EntryMeta meta = Meta(in);
    absl::Status s;
    switch (in.ConsumeIntegralInRange(0, 9)) {
      case 0:
      case 1:
        s = b.AddDirectory(path, meta);
        if (s.ok()) dirs.push_back(path);
        break;
      case 2:
      case 3: {
        uint64_t fsize = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 100000)
                                          : in.ConsumeIntegral<uint64_t>() >> 24;
        s = b.AddRegular(path, meta, fsize, Chunks(in, fsize, &blob_pos));
        if (s.ok()) files.push_back(path);
        break;
      }
      case 4:
        s = b.AddSymlink(path, meta, std::string(in.ConsumeIntegralInRange(1, 4095), 'l'));
        break;
      case 5:
        s = b.AddDevice(path, meta, in.ConsumeBool() ? S_IFCHR : S_IFBLK,
                        in.ConsumeIntegralInRange<uint32_t>(0, 4095),
                        in.ConsumeIntegralInRange<uint32_t>(0, 1048575));
        break;
      case 6:
        s = b.AddFifo(path, meta);
        break;
      case 7:
        if (!files.empty()) {
          s = b.AddHardlink(path, files[in.ConsumeIntegralInRange<size_t>(0, files.size() - 1)]);
        }
        break;
      case 8:
        s = b.AddRegular((parent.empty() ? "" : parent + "/") + ".wh." + Name(in), meta, 0, {});
        break;
      case 9:
        s = b.AddRegular((parent.empty() ? "" : parent + "/") + ".wh..wh..opq", meta, 0, {});
        break;
    }
    if (!s.ok()) return 0;  // an invalid index is not this target's input
  }
  absl::StatusOr<LayerIndex> index = b.Finish(Digest(), blob_pos + 100, blob_pos);
  if (!index.ok()) return 0;
  const uint32_t block_bits = in.ConsumeIntegralInRange<uint32_t>(kMinBlockBits, kMaxBlockBits);
  absl::StatusOr<BlobLayout> layout = PlanBlobLayout(*index, block_bits);
  if (!layout.ok()) {
    // Only a blob beyond 2^32 blocks may be refused.
    Check(layout.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  for (const BlobExtent& e : layout->extents) Check(e.offset + e.length <= layout->size);
  absl::StatusOr<std::string> image = BuildErofsImage(*index, layout->device, {});
  if (!image.ok()) {
    // Only what EROFS cannot represent may fail: long xattr values on one inode.
    Check(image.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  absl::StatusOr<CheckedImage> checked = CheckErofsImage(*image);
  if (!checked.ok()) {
    fprintf(stderr, "%s\n", checked.status().ToString().c_str());
    abort();
  }
  CompareWithIndex(*checked, *index, layout->device);

  // The tar layout: payloads one after another, 512-aligned.
  std::vector<uint64_t> offsets(index->inode_count(), UINT64_MAX);
  uint64_t tar_pos = 512;
  for (Ino ino = 1; ino <= index->inode_count(); ++ino) {
    InodeAttr a = *index->GetAttr(ino);
    if (!S_ISREG(a.mode) || a.size == 0) continue;
    offsets[ino - 1] = tar_pos;
    tar_pos += RoundUp(a.size, 512) + 512;
  }
  if (tar_pos >> 9 < kNullBlock) {
    absl::StatusOr<DeviceLayout> tar = PlanTarLayout(*index, offsets, tar_pos);
    Check(tar.ok());
    absl::StatusOr<std::string> tar_image = BuildErofsImage(*index, *tar, {});
    Check(tar_image.ok());
    absl::StatusOr<CheckedImage> tar_checked = CheckErofsImage(*tar_image);
    Check(tar_checked.ok());
    CompareWithIndex(*tar_checked, *index, *tar);
  }
  return 0;
}
