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

absl::StatusOr<std::string> DecodeSpan(const Chunk& chunk, std::string_view compressed,
                                       const SpanDecoder* spans) {
  if (chunk.compression != ChunkCompression::kGzipSpan) {
    return absl::InvalidArgumentError("DecodeSpan: not a SOCI span chunk");
  }
  if (spans == nullptr) return ChunkError(chunk, "SOCI span without a span decoder");
  if (compressed.size() != chunk.compressed_length) {
    return ChunkError(chunk, fmt::format("got {} compressed bytes", compressed.size()));
  }
  // The span digest covers the compressed bytes: checked before inflating any of them.
  if (!chunk.has_digest) return ChunkError(chunk, "SOCI span without a digest");
  if (auto st = chunk.digest_value().Verify(compressed); !st.ok()) {
    return ChunkError(chunk, Msg(st));
  }
  absl::StatusOr<std::string> span = spans->Inflate(chunk, compressed);
  if (!span.ok()) return ChunkError(chunk, Msg(span.status()));
  if (chunk.inner_offset > span->size() || chunk.length > span->size() - chunk.inner_offset) {
    return ChunkError(chunk, fmt::format("span holds {} bytes, need [{}, +{})", span->size(),
                                         chunk.inner_offset, chunk.length));
  }
  return span;
}

absl::StatusOr<std::string> DecodeChunk(const Chunk& chunk, std::string_view compressed,
                                        const SpanDecoder* spans) {
  std::string out;
  switch (chunk.compression) {
    case ChunkCompression::kGzipSpan: {
      absl::StatusOr<std::string> span = DecodeSpan(chunk, compressed, spans);
      if (!span.ok()) return span.status();
      return span->substr(chunk.inner_offset, chunk.length);
    }
    case ChunkCompression::kZeros:
      out.assign(chunk.length, '\0');
      break;
    case ChunkCompression::kGzipMember: {
      if (compressed.size() != chunk.compressed_length) {
        return ChunkError(chunk, fmt::format("got {} compressed bytes", compressed.size()));
      }
      // The member may go on with other files' bytes and tar headers: decode it whole when
      // that is cheap (checks the CRC), else only the prefix we need.
      const uint64_t need = chunk.inner_offset + chunk.length;
      auto data = codec::Gunzip(compressed, {.max_output = need + (1 << 20)});
      if (!data.ok() && data.status().code() == absl::StatusCode::kResourceExhausted) {
        data = codec::Gunzip(compressed, {.stop_after = need});
      }
      if (data.ok() && data->size() > need) data->resize(need);
      if (!data.ok()) return ChunkError(chunk, Msg(data.status()));
      if (data->size() != chunk.inner_offset + chunk.length) {
        return ChunkError(chunk, fmt::format("member holds {} bytes, need {}", data->size(),
                                             chunk.inner_offset + chunk.length));
      }
      out = chunk.inner_offset == 0 ? std::move(*data) : data->substr(chunk.inner_offset);
      break;
    }
    case ChunkCompression::kZstdFrame: {
      if (compressed.size() != chunk.compressed_length) {
        return ChunkError(chunk, fmt::format("got {} compressed bytes", compressed.size()));
      }
      // containers/storage frames hold exactly the chunk; stargz-snapshotter's zstd:chunked
      // frames may be followed by tar headers, so take the prefix and rely on the digest.
      const uint64_t need = chunk.inner_offset + chunk.length;
      // Whole frame first (checks its checksum); only a frame with a large tail is cut short.
      auto data = codec::ZstdDecompress(compressed, {.max_output = need + (1 << 20)});
      if (!data.ok() && data.status().code() == absl::StatusCode::kResourceExhausted) {
        data = codec::ZstdDecompress(compressed, {.stop_after = need});
      }
      if (data.ok() && data->size() > need) data->resize(need);
      if (!data.ok()) return ChunkError(chunk, Msg(data.status()));
      if (data->size() != need) {
        return ChunkError(chunk, fmt::format("frame holds {} bytes, need {}", data->size(), need));
      }
      out = chunk.inner_offset == 0 ? std::move(*data) : data->substr(chunk.inner_offset);
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
