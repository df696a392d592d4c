// StreamDecoder: incremental decompression of ONE gzip member or ONE zstd frame, for data too
// large to hold in memory (a multi-gigabyte chunk of a layer). Compressed bytes go in as they
// arrive; decompressed bytes come out through a callback in pieces of at most kPieceBytes, so
// memory stays bounded whatever sizes the stream or its headers claim.
//
// Not thread-safe: one decoder per stream, used from one thread at a time.
#ifndef LAZYPULL_FETCHER_CODEC_STREAM_DECODER_H_
#define LAZYPULL_FETCHER_CODEC_STREAM_DECODER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string_view>

#include "absl/status/status.h"

namespace lazypull::codec {

class StreamDecoder {
 public:
  // Largest piece handed to the output callback.
  static constexpr size_t kPieceBytes = 256 << 10;
  // Receives decompressed bytes in order. An error stops decoding and is returned by Feed.
  using Output = std::function<absl::Status(std::string_view piece)>;

  // A gzip member (RFC 1952; header, CRC32 and ISIZE are checked at its end).
  static std::unique_ptr<StreamDecoder> NewGzipMember();
  // A zstd frame (window capped at 128 MiB; checksum checked when the frame has one).
  static std::unique_ptr<StreamDecoder> NewZstdFrame();

  virtual ~StreamDecoder() = default;

  // Decompresses `input`, calling `out` with what it produces. Input after the end of the
  // member/frame is ignored (and reported by ended()). Errors: DataLoss for corrupt data,
  // ResourceExhausted if the decoder cannot allocate, `out`'s error as is. After an error the
  // decoder must not be used again.
  virtual absl::Status Feed(std::string_view input, const Output& out) = 0;

  // Whether the member/frame has ended (its trailer read and checked).
  virtual bool ended() const = 0;
};

}  // namespace lazypull::codec

#endif  // LAZYPULL_FETCHER_CODEC_STREAM_DECODER_H_
