#include "fetcher/format/chunk_stream_decoder.h"

#include <algorithm>

#include "fmt/format.h"

namespace lazypull::format {

ChunkStreamDecoder::ChunkStreamDecoder(const Chunk& chunk)
    : chunk_(chunk),
      decoder_(chunk.compression == ChunkCompression::kZstdFrame
                   ? codec::StreamDecoder::NewZstdFrame()
                   : codec::StreamDecoder::NewGzipMember()),
      to_skip_(chunk.inner_offset) {}

absl::Status ChunkStreamDecoder::Error(std::string_view what) const {
  return absl::DataLossError(fmt::format("chunk at blob offset {} (+{}, file offset {}): {}",
                                         chunk_.compressed_offset, chunk_.compressed_length,
                                         chunk_.file_offset, what));
}

absl::Status ChunkStreamDecoder::Feed(std::string_view compressed,
                                      const codec::StreamDecoder::Output& out) {
  if (compressed.size() > chunk_.compressed_length - compressed_seen_) {
    return Error("more compressed bytes than the chunk has");
  }
  compressed_seen_ += compressed.size();
  // The member/frame may go on past the chunk (eStargz: the next entry's tar header): once
  // the chunk's bytes are out, the rest is not decoded.
  if (produced_ == chunk_.length) return absl::OkStatus();
  absl::Status st = decoder_->Feed(compressed, [&](std::string_view piece) -> absl::Status {
    const uint64_t skip = std::min<uint64_t>(to_skip_, piece.size());
    to_skip_ -= skip;
    piece.remove_prefix(skip);
    piece = piece.substr(0, std::min<uint64_t>(piece.size(), chunk_.length - produced_));
    if (piece.empty()) return absl::OkStatus();
    produced_ += piece.size();
    hash_.Update(piece);
    return out(piece);
  });
  if (!st.ok() && st.code() == absl::StatusCode::kDataLoss) return Error(std::string(st.message()));
  return st;
}

absl::Status ChunkStreamDecoder::Finish() {
  if (produced_ != chunk_.length) {
    return Error(fmt::format("stream holds {} bytes of the chunk, need {}", produced_,
                             chunk_.length));
  }
  Digest got = hash_.Finish();
  if (chunk_.has_digest && got != chunk_.digest_value()) {
    return Error(fmt::format("digest mismatch: got {}, want {}", got.ToString(),
                             chunk_.digest_value().ToString()));
  }
  return absl::OkStatus();
}

}  // namespace lazypull::format
