// ScanTar: indexes an uncompressed tar stream held in a BlobReader.
//
// Reads only header blocks and extension payloads (PAX records, GNU long names), never file
// payloads, so scanning a multi-GB layer costs one small read per entry.
#ifndef LAZYPULL_FETCHER_TAR_TAR_SCANNER_H_
#define LAZYPULL_FETCHER_TAR_TAR_SCANNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/tar/tar_entry.h"
#include "lazypull/blob_reader.h"

namespace lazypull::tar {

struct TarIndex {
  std::vector<TarEntry> entries;  // in stream order
  // Offset of the end-of-archive marker (first all-zero header block), or the stream size
  // when the stream ends without one. [trailer_offset, stream size) is the trailer: the zero
  // blocks plus any record padding.
  uint64_t trailer_offset = 0;
  uint64_t stream_size = 0;
};

struct ScanOptions {
  // Largest PAX 'x' or GNU 'L'/'K' payload accepted (bomb protection).
  uint64_t max_extension_size = 16ull << 20;
};

// Indexes `tar`. Errors: DataLoss for a bad header checksum, a truncated entry or a
// non-numeric field; InvalidArgument for malformed PAX records; Unimplemented for sparse
// entries (GNU 'S' or PAX GNU.sparse.*) and unknown type flags ('V', 'M', ...). Messages
// name the offset and entry. `tar` is read concurrently-safe; the result owns no reference.
absl::StatusOr<TarIndex> ScanTar(BlobReader& tar, const ScanOptions& options = {});

}  // namespace lazypull::tar

#endif  // LAZYPULL_FETCHER_TAR_TAR_SCANNER_H_
