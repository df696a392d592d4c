#include "mount/erofs/tar_payloads.h"

#include <sys/stat.h>

#include "fmt/format.h"

namespace lazypull::mount::erofs {

absl::StatusOr<std::vector<uint64_t>> MatchTarPayloads(const format::LayerIndex& index,
                                                       const tar::TarIndex& tar) {
  std::vector<uint64_t> offsets(index.inode_count(), kNoPayload);
  for (const tar::TarEntry& e : tar.entries) {
    if (e.type != tar::EntryType::kRegular || e.payload_size == 0) continue;
    std::optional<format::Ino> ino = index.LookupPath(tar::CleanEntryName(e.name));
    if (!ino) continue;
    std::optional<format::InodeAttr> a = index.GetAttr(*ino);
    if ((a->mode & S_IFMT) != S_IFREG || offsets[*ino - 1] != kNoPayload) continue;
    if (a->size != e.payload_size) {
      return absl::InvalidArgumentError(fmt::format("{}: {} bytes in the index, {} in the tar",
                                                    index.Path(*ino), a->size, e.payload_size));
    }
    offsets[*ino - 1] = e.payload_offset;
  }
  for (format::Ino ino = 1; ino <= index.inode_count(); ++ino) {
    std::optional<format::InodeAttr> a = index.GetAttr(ino);
    if ((a->mode & S_IFMT) == S_IFREG && a->size > 0 && offsets[ino - 1] == kNoPayload) {
      return absl::InvalidArgumentError(
          fmt::format("{}: no payload in the tar for its {} bytes", index.Path(ino), a->size));
    }
  }
  return offsets;
}

}  // namespace lazypull::mount::erofs
