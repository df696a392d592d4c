// ChunkStreamDecoder: the streaming counterpart of DecodeChunk (chunk_decoder.h), for chunks
// too large to hold in memory (a multi-gigabyte file stored as one chunk is legal). The
// compressed bytes of one chunk go in as they arrive; the chunk's bytes (from `inner_offset`,
// exactly `length` of them) come out in pieces of bounded size, hashed on the way. Finish()
// says whether they were the chunk. Until Finish() is OK every byte that came out is
// UNVERIFIED: callers write them to a temp file, never to a reader.
//
// Not thread-safe; one decoder per chunk fetch.
#ifndef LAZYPULL_FETCHER_FORMAT_CHUNK_STREAM_DECODER_H_
#define LAZYPULL_FETCHER_FORMAT_CHUNK_STREAM_DECODER_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "fetcher/codec/stream_decoder.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/digest.h"

namespace lazypull::format {

class ChunkStreamDecoder {
 public:
  // `chunk` must be a gzip-member or zstd-frame chunk (not kZeros).
  explicit ChunkStreamDecoder(const Chunk& chunk);
  ChunkStreamDecoder(const ChunkStreamDecoder&) = delete;
  ChunkStreamDecoder& operator=(const ChunkStreamDecoder&) = delete;

  // Consumes the next compressed bytes of the chunk and calls `out` with the chunk bytes they
  // yield. Errors: DataLoss (corrupt data, more compressed bytes than the chunk has), `out`'s
  // error as is. All errors name the chunk's blob offset.
  absl::Status Feed(std::string_view compressed, const codec::StreamDecoder::Output& out);

  // After the last compressed byte: OK iff exactly `length` chunk bytes came out and they
  // hash to the chunk's digest (chunks built without one are checked for length only).
  // DataLoss otherwise.
  absl::Status Finish();

 private:
  absl::Status Error(std::string_view what) const;

  const Chunk chunk_;
  std::unique_ptr<codec::StreamDecoder> decoder_;
  uint64_t compressed_seen_ = 0;
  uint64_t to_skip_;       // decompressed bytes before the chunk (inner_offset)
  uint64_t produced_ = 0;  // chunk bytes handed out
  Sha256 hash_;
};

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_CHUNK_STREAM_DECODER_H_
