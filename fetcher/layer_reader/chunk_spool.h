// ChunkSpool: fetches one chunk too large to hold in memory into a file. Its compressed bytes
// are fed as they arrive, decompressed and hashed on the way (ChunkStreamDecoder) into a temp
// file in the chunk cache's tmp/ (TempChunk); Finish() verifies the whole chunk and only then
// hands the file out, adopted into the cache when it fits there. So memory stays bounded by
// the decoder's pieces whatever size the TOC declares, and no unverified byte ever reaches a
// reader: a reader waiting for offset X of the chunk is served once the chunk is verified,
// i.e. after one streaming pass of fetch + decompress + hash over it.
//
// Not thread-safe: one spool per chunk fetch, fed from one thread.
#ifndef LAZYPULL_FETCHER_LAYER_READER_CHUNK_SPOOL_H_
#define LAZYPULL_FETCHER_LAYER_READER_CHUNK_SPOOL_H_

#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/chunk_stream_decoder.h"
#include "fetcher/format/layer_index.h"

namespace lazypull {

class ChunkSpool {
 public:
  // `chunk` is a gzip or zstd chunk with a digest; `cache` must outlive the spool.
  ChunkSpool(const format::Chunk& chunk, ChunkCache* cache);

  // The next compressed bytes of the chunk (in order). The first call creates the temp file.
  // Errors: the decoder's (DataLoss) or the file's (I/O); after one, Finish reports it.
  absl::Status Feed(std::string_view compressed);

  // After the chunk's last compressed byte: the verified file (adopted into the cache when
  // possible: *stored tells), or DataLoss/I/O errors (the temp file is removed).
  absl::StatusOr<std::shared_ptr<const TempChunk>> Finish(bool* stored);

 private:
  const format::Chunk chunk_;
  ChunkCache* const cache_;
  format::ChunkStreamDecoder decoder_;
  std::unique_ptr<TempChunk> file_;
  absl::Status status_;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_CHUNK_SPOOL_H_
