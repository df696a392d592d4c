// Zstandard frames: decompression with a hard output cap, one-shot compression, and
// skippable-frame helpers (zstd:chunked keeps its metadata in skippable frames).
//
// All functions are stateless and thread-safe.
#ifndef LAZYPULL_FETCHER_CODEC_ZSTD_H_
#define LAZYPULL_FETCHER_CODEC_ZSTD_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace lazypull::codec {

// Magic of the skippable frame zstd:chunked uses (0x184D2A50, "50 2A 4D 18" on disk).
inline constexpr uint32_t kZstdSkippableMagic = 0x184D2A50;
// Bytes before a skippable frame's payload: u32 LE magic + u32 LE payload length.
inline constexpr uint64_t kZstdSkippableHeaderSize = 8;

struct ZstdDecompressOptions {
  // Hard cap on decompressed bytes (bomb protection). Exceeding it is ResourceExhausted.
  uint64_t max_output = 64ull << 20;
  // If non-zero: stop as soon as this many bytes are produced and return exactly them (the
  // rest of the input is not checked; callers verify the bytes by digest). Overrides
  // max_output. For frames that hold a chunk followed by other data (eStargz-style zstd).
  uint64_t stop_after = 0;
};

// Decompresses one or more concatenated zstd frames (skippable frames are skipped). The input
// must end exactly at a frame boundary. Errors: DataLoss for corrupt or truncated input (and
// for empty input), ResourceExhausted past `options.max_output`.
absl::StatusOr<std::string> ZstdDecompress(std::string_view compressed,
                                           const ZstdDecompressOptions& options = {});

// Compresses `data` into exactly one zstd frame that records its content size and a
// checksum. `level` as zstd (1..22; 3 is zstd's default). InvalidArgument on a bad level.
absl::StatusOr<std::string> ZstdCompress(std::string_view data, int level = 3);

// Returns a skippable frame (magic 0x184D2A50) carrying `payload`. InvalidArgument if the
// payload does not fit in 32 bits.
absl::StatusOr<std::string> ZstdSkippableFrame(std::string_view payload);

}  // namespace lazypull::codec

#endif  // LAZYPULL_FETCHER_CODEC_ZSTD_H_
