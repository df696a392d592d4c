// Chunk decoding for the read path: compressed bytes of one chunk → verified file bytes.
//
// The FUSE layer fetches Chunk::compressed_range() from the blob (or nothing for kZeros),
// calls DecodeChunk, and serves/caches the result only if it returns OK. Thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_CHUNK_DECODER_H_
#define LAZYPULL_FETCHER_FORMAT_CHUNK_DECODER_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"

namespace lazypull::format {

// Decompresses `compressed` (exactly chunk.compressed_range() of the blob; ignored for
// kZeros), takes the chunk's `length` bytes (from `inner_offset` for gzip members) and
// checks them against the chunk digest (skipped only for chunks without one, i.e. indexes
// built with allow_missing_digests). Returns exactly chunk.length bytes. Every failure —
// wrong compressed size, corrupt data, too few or too many bytes, digest mismatch — is
// DataLoss naming the chunk's blob offset.
// kGzipSpan chunks need their layer's `spans` (LayerIndex::span_decoder()): their
// compressed bytes are checked against the span digest BEFORE they are inflated.
absl::StatusOr<std::string> DecodeChunk(const Chunk& chunk, std::string_view compressed,
                                        const SpanDecoder* spans = nullptr);

// For a kGzipSpan chunk: checks `compressed` (exactly chunk.compressed_range()) against the
// span digest, then returns the whole inflated span, which holds the chunk at [inner_offset,
// +length). DataLoss as DecodeChunk.
absl::StatusOr<std::string> DecodeSpan(const Chunk& chunk, std::string_view compressed,
                                       const SpanDecoder* spans);

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_CHUNK_DECODER_H_
