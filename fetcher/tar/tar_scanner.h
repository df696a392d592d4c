// ScanTar: indexes an uncompressed tar stream held in a BlobReader (random access) or produced
// on the fly (ScanTarStream, e.g. while inflating a gzip layer once).
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

// A forward-only tar stream for ScanTarStream. The scanner asks for offsets in increasing
// order (each Read/Available at or past the end of the previous call's range), so an
// implementation may discard everything before the offset asked for.
class TarSource {
 public:
  virtual ~TarSource() = default;
  // Bytes [offset, offset + length); fewer only where the stream ends. Errors are returned as
  // is by the scanner.
  virtual absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) = 0;
  // min(stream size, end): whether, or where before `end`, the stream ends.
  virtual absl::StatusOr<uint64_t> Available(uint64_t end) = 0;
  // Told, once its header has been read and before its payload is skipped, where an entry's
  // payload lies: [offset, offset + size) (size 0 for header-only entries). For sources that
  // act on the tar's layout while producing it (e.g. checkpoints at file boundaries).
  virtual void OnPayload(uint64_t offset, uint64_t size) {}
};

// ScanTar over a forward-only source, with the same errors. The stream's size is unknown to
// the scanner: stream_size is set to where scanning stopped (trailer_offset); bytes after the
// end-of-archive marker are not read.
absl::StatusOr<TarIndex> ScanTarStream(TarSource& source, const ScanOptions& options = {});

}  // namespace lazypull::tar

#endif  // LAZYPULL_FETCHER_TAR_TAR_SCANNER_H_
