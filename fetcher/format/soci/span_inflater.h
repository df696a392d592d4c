// InflateSpan: the uncompressed bytes of one SOCI span, inflated from its checkpoint.
//
// A span of a gzip layer starts mid-stream, at a deflate block boundary that need not fall on
// a byte boundary, and its back-references reach into the 32 KiB before it. zlib resumes
// there (raw inflate, inflatePrime with the leftover bits, inflateSetDictionary with the
// checkpoint's window); libdeflate has no such entry point. Spans may cross gzip member
// boundaries (pigz and friends): the member trailer is skipped and the next member's header
// parsed, as soci-snapshotter does.
//
// Stateless and thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SPAN_INFLATER_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SPAN_INFLATER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/zinfo_checkpoints.h"

namespace lazypull::soci {

struct SpanInflateOptions {
  // The span ends where the next checkpoint starts: after producing `uncompressed_length`
  // bytes the decoder must sit exactly at a block boundary with every input byte consumed.
  // This catches a zTOC whose offsets do not describe the blob (its digests only cover the
  // compressed bytes). False for the last span, which runs to the end of the blob.
  bool expect_block_end = true;
};

// Inflates `compressed` — the span's bytes from `checkpoint.resume_offset()` to the span end,
// already verified against the span digest — into exactly `uncompressed_length` bytes.
// Errors: DataLoss for corrupt deflate data, input that ends before `uncompressed_length`
// bytes, or (expect_block_end) a span that does not end at a block boundary; InvalidArgument
// for a window of the wrong size or empty input with bits. The caller bounds
// `uncompressed_length` (the zTOC parser caps span sizes).
absl::StatusOr<std::string> InflateSpan(const Checkpoint& checkpoint, std::string_view compressed,
                                        uint64_t uncompressed_length,
                                        const SpanInflateOptions& options = {});

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SPAN_INFLATER_H_
