#include "fetcher/format/chunk_decoder.h"

#include "absl/status/status.h"
#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/status_util.h"
#include "fmt/format.h"

namespace lazypull::format {
namespace {

absl::Status ChunkError(const Chunk& c, std::string_view what) {
  return absl::DataLossError(fmt::format("chunk at blob offset {} (+{}, file offset {}): {}",
                                         c.compressed_offset, c.compressed_length, c.file_offset,
                                         what));
}

}  // namespace

absl::StatusOr<std::string> DecodeChunk(const Chunk& chunk, std::string_view compressed) {
  std::string out;
  switch (chunk.compression) {
    case ChunkCompression::kZeros:
      out.assign(chunk.length, '\0');
      break;
    case ChunkCompression::kGzipMember: {
      if (compressed.size() != chunk.compressed_length) {
        return ChunkError(chunk, fmt::format("got {} compressed bytes", compressed.size()));
      }
      auto data = codec::Gunzip(compressed, {.stop_after = chunk.inner_offset + chunk.length});
      if (!data.ok()) return ChunkError(chunk, Msg(data.status()));
      if (data->size() != chunk.inner_offset + chunk.length) {
        return ChunkError(chunk, fmt::format("member holds {} bytes, need {}", data->size(),
                                             chunk.inner_offset + chunk.length));
      }
      out = data->substr(chunk.inner_offset);
      break;
    }
    case ChunkCompression::kZstdFrame: {
      if (compressed.size() != chunk.compressed_length) {
        return ChunkError(chunk, fmt::format("got {} compressed bytes", compressed.size()));
      }
      auto data = codec::ZstdDecompress(compressed, {.max_output = chunk.length});
      if (!data.ok()) return ChunkError(chunk, Msg(data.status()));
      if (data->size() != chunk.length) {
        return ChunkError(chunk,
                          fmt::format("frame holds {} bytes, want {}", data->size(), chunk.length));
      }
      out = std::move(*data);
      break;
    }
  }
  if (chunk.has_digest) {
    Digest want = chunk.digest_value();
    if (auto st = want.Verify(out); !st.ok()) return ChunkError(chunk, Msg(st));
  }
  return out;
}

}  // namespace lazypull::format
