// Gzip (RFC 1952) members: decompression with a hard output cap, and one-shot compression.
//
// eStargz stores every file payload and the TOC in gzip members of their own, so a reader
// decompresses exactly one member (or a short run of them) at a time. All functions are
// stateless and thread-safe.
#ifndef LAZYPULL_FETCHER_CODEC_GZIP_H_
#define LAZYPULL_FETCHER_CODEC_GZIP_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lazypull::codec {

struct GunzipOptions {
  // Hard cap on decompressed bytes (bomb protection). Exceeding it is ResourceExhausted.
  uint64_t max_output = 64ull << 20;
  // Whether `compressed` may hold several concatenated members (as a .tar.gz of eStargz).
  // If false, bytes after the first member's trailer are InvalidArgument.
  bool allow_multiple_members = true;
  // If non-zero: stop as soon as this many bytes are produced and return exactly them (the
  // rest of the input, including the member trailer, is not checked). For reading one file
  // out of a gzip member shared with others; callers verify the bytes by digest. Overrides
  // max_output.
  uint64_t stop_after = 0;
};

// Decompresses `compressed`, which must start at a member header and end exactly at a member
// trailer. Errors: DataLoss for corrupt or truncated data (bad header, CRC/ISIZE mismatch,
// stream ending mid-member), ResourceExhausted when the output would exceed
// `options.max_output`, InvalidArgument for trailing garbage. Empty input is DataLoss.
absl::StatusOr<std::string> Gunzip(std::string_view compressed, const GunzipOptions& options = {});

// Compresses `data` into exactly one gzip member (mtime 0, no name). `level` 1..12
// (libdeflate levels; 6 is close to gzip's default). Never fails for valid levels; an
// out-of-range level is InvalidArgument.
absl::StatusOr<std::string> GzipCompress(std::string_view data, int level = 6);

}  // namespace lazypull::codec

#endif  // LAZYPULL_FETCHER_CODEC_GZIP_H_
