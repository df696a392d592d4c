// MatchTarPayloads: where each regular file of a LayerIndex starts inside the layer's original
// uncompressed tar, so a graduated EROFS image can point its chunks into the tar itself.
#ifndef LAZYPULL_MOUNT_EROFS_TAR_PAYLOADS_H_
#define LAZYPULL_MOUNT_EROFS_TAR_PAYLOADS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/tar/tar_scanner.h"

namespace lazypull::mount::erofs {

inline constexpr uint64_t kNoPayload = UINT64_MAX;

// Result by ino - 1: the payload offset of the regular tar entry whose cleaned name is the
// file's path (for hardlinks, the entry that carried the bytes), kNoPayload for non-regular and
// empty files. Tar entries the index does not show (the eStargz TOC and landmarks, whiteout
// markers) are ignored. InvalidArgument naming the file when a non-empty regular file has no
// payload in the tar or its payload size differs from the index.
absl::StatusOr<std::vector<uint64_t>> MatchTarPayloads(const format::LayerIndex& index,
                                                       const tar::TarIndex& tar);

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_TAR_PAYLOADS_H_
