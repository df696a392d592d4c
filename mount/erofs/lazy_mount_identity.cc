#include "mount/erofs/lazy_mount_identity.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"
#include "lazypull/digest.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/loop_device.h"
#include "mount/fuse/stale_mounts.h"

namespace lazypull::mount::erofs {

uint64_t StableBlobIno(uint64_t mount_id, uint8_t epoch) {
  if (mount_id == 0 || mount_id >= (kVolatileInoBase >> 8)) return 0;
  return (mount_id << 8) | epoch;
}

std::string LayoutFingerprint(const BlobLayout& layout) {
  Sha256 h;
  h.Update(fmt::format("v1 {} {} {}\n", layout.device.block_bits, layout.device.device_blocks,
                       layout.size));
  for (const FileChunks& f : layout.device.files) {
    std::string line = fmt::format("f {}", f.chunk_bits);
    for (uint32_t b : f.blocks) line += fmt::format(" {}", b);
    h.Update(line + "\n");
  }
  for (const BlobExtent& e : layout.extents) {
    h.Update(fmt::format("e {} {} {} {}\n", e.offset, e.length, e.ino, e.file_offset));
  }
  return h.Finish().hex().substr(0, 16);
}

std::string LazyImagePath(const std::string& images_dir, const std::string& blob_name,
                          const std::string& fingerprint) {
  return fmt::format("{}/{}.{}.erofs", images_dir, blob_name, fingerprint);
}

std::optional<ExistingLazyMount> FindExistingLazyMount(const std::string& target,
                                                       const std::string& images_dir,
                                                       const std::string& name_hint) {
  absl::StatusOr<std::vector<MountPoint>> mounts = MountsUnder(target);
  if (!mounts.ok()) return std::nullopt;
  // Stacked mounts on one path are listed oldest first: the last one is visible.
  const MountPoint* top = nullptr;
  for (const MountPoint& m : *mounts) {
    if (m.path == target) top = &m;
  }
  if (top == nullptr || top->fstype != "erofs") return std::nullopt;
  ExistingLazyMount out;
  std::string image = top->source;
  if (absl::StartsWith(image, "/dev/loop")) {
    out.loop = true;
    image.clear();
    for (const LoopDeviceInfo& d : ListLoopDevices()) {
      if (d.path == top->source) image = d.backing_file;
    }
    // The image was unlinked once mounted.
    if (absl::EndsWith(image, " (deleted)")) image.resize(image.size() - 10);
  }
  const std::string prefix = images_dir + "/" + name_hint + ".";
  absl::string_view rest = image;
  if (!absl::ConsumePrefix(&rest, prefix) || !absl::ConsumeSuffix(&rest, ".erofs")) {
    return std::nullopt;
  }
  std::vector<std::string> parts = absl::StrSplit(rest, '.');
  if (parts.size() != 2 || parts[1].size() != 16 || !absl::SimpleAtoi(parts[0], &out.ino) ||
      out.ino == 0 || out.ino >= kVolatileInoBase) {
    return std::nullopt;
  }
  out.fingerprint = parts[1];
  return out;
}

}  // namespace lazypull::mount::erofs
