#include "fetcher/codec/stream_decoder.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <vector>

#include "fmt/format.h"

namespace lazypull::codec {
namespace {

class GzipMemberDecoder : public StreamDecoder {
 public:
  GzipMemberDecoder() : buf_(kPieceBytes) {
    stream_ = z_stream{};
    // 16 + MAX_WBITS: gzip wrapper, its CRC32 and ISIZE checked by zlib.
    init_ = inflateInit2(&stream_, 16 + MAX_WBITS);
  }
  ~GzipMemberDecoder() override {
    if (init_ == Z_OK) inflateEnd(&stream_);
  }

  absl::Status Feed(std::string_view input, const Output& out) override {
    if (init_ != Z_OK) return absl::ResourceExhaustedError("gunzip: inflateInit2 failed");
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
    stream_.avail_in = static_cast<uInt>(input.size());
    while (!ended_ && stream_.avail_in > 0) {
      stream_.next_out = reinterpret_cast<Bytef*>(buf_.data());
      stream_.avail_out = static_cast<uInt>(buf_.size());
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      const size_t produced = buf_.size() - stream_.avail_out;
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        return absl::DataLossError(
            fmt::format("gunzip: corrupt member after {} input bytes: {}", stream_.total_in,
                        stream_.msg != nullptr ? stream_.msg : "inflate failed"));
      }
      if (produced > 0) {
        if (absl::Status st = out(std::string_view(buf_.data(), produced)); !st.ok()) return st;
      }
      if (rc == Z_STREAM_END) ended_ = true;
      if (rc == Z_BUF_ERROR && produced == 0) break;  // needs more input
    }
    return absl::OkStatus();
  }
  bool ended() const override { return ended_; }

 private:
  z_stream stream_;
  int init_;
  bool ended_ = false;
  std::vector<char> buf_;
};

class ZstdFrameDecoder : public StreamDecoder {
 public:
  ZstdFrameDecoder() : ds_(ZSTD_createDStream()), buf_(kPieceBytes) {
    // A hostile frame must not make us allocate a huge window.
    if (ds_ != nullptr) ZSTD_DCtx_setParameter(ds_, ZSTD_d_windowLogMax, 27);
  }
  ~ZstdFrameDecoder() override { ZSTD_freeDStream(ds_); }

  absl::Status Feed(std::string_view input, const Output& out) override {
    if (ds_ == nullptr) return absl::ResourceExhaustedError("zstd: cannot allocate decoder");
    ZSTD_inBuffer in{input.data(), input.size(), 0};
    while (!ended_) {
      ZSTD_outBuffer ob{buf_.data(), buf_.size(), 0};
      const size_t rc = ZSTD_decompressStream(ds_, &ob, &in);
      if (ZSTD_isError(rc)) {
        return absl::DataLossError(fmt::format("zstd: corrupt frame: {}", ZSTD_getErrorName(rc)));
      }
      if (ob.pos > 0) {
        if (absl::Status st = out(std::string_view(buf_.data(), ob.pos)); !st.ok()) return st;
      }
      if (rc == 0) {
        ended_ = true;  // frame complete and flushed
        break;
      }
      // Output not full: the decoder has used all it can of this input.
      if (ob.pos < ob.size && in.pos == in.size) break;
    }
    return absl::OkStatus();
  }
  bool ended() const override { return ended_; }

 private:
  ZSTD_DStream* ds_;
  bool ended_ = false;
  std::vector<char> buf_;
};

}  // namespace

std::unique_ptr<StreamDecoder> StreamDecoder::NewGzipMember() {
  return std::make_unique<GzipMemberDecoder>();
}

std::unique_ptr<StreamDecoder> StreamDecoder::NewZstdFrame() {
  return std::make_unique<ZstdFrameDecoder>();
}

}  // namespace lazypull::codec
