// Builds ustar headers for entries the converter adds itself (eStargz landmarks and the
// stargz.index.json TOC), in the same shape Go's archive/tar writes them.
#ifndef LAZYPULL_FETCHER_TAR_TAR_HEADER_WRITER_H_
#define LAZYPULL_FETCHER_TAR_TAR_HEADER_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace lazypull::tar {

// One 512-byte ustar header for a regular file `name` of `size` bytes, mode/uid/gid/mtime 0,
// empty user and group names. InvalidArgument if `name` is longer than 100 bytes or `size`
// does not fit the 11-digit octal field.
absl::StatusOr<std::string> RegularFileHeader(const std::string& name, uint64_t size);

// The two zero blocks that end a tar archive.
std::string EndOfArchive();

}  // namespace lazypull::tar

#endif  // LAZYPULL_FETCHER_TAR_TAR_HEADER_WRITER_H_
