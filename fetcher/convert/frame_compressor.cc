#include "fetcher/convert/frame_compressor.h"

#include <libdeflate.h>
#include <zstd.h>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::convert {

GzipMemberCompressor::GzipMemberCompressor(int level) : level_(level) {
  if (level >= 1 && level <= 12) compressor_ = libdeflate_alloc_compressor(level);
}

GzipMemberCompressor::~GzipMemberCompressor() {
  if (compressor_ != nullptr) libdeflate_free_compressor(compressor_);
}

absl::StatusOr<std::string> GzipMemberCompressor::Compress(std::string_view data) {
  if (compressor_ == nullptr) {
    return absl::InvalidArgumentError(fmt::format("gzip level {} is not in 1..12", level_));
  }
  std::string out(libdeflate_gzip_compress_bound(compressor_, data.size()), '\0');
  size_t n =
      libdeflate_gzip_compress(compressor_, data.data(), data.size(), out.data(), out.size());
  if (n == 0) return absl::InternalError("libdeflate: gzip compression failed");
  out.resize(n);
  return out;
}

ZstdFrameCompressor::ZstdFrameCompressor(int level) : level_(level) {
  if (level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel() && level != 0) {
    cctx_ = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_contentSizeFlag, 1);
  }
}

ZstdFrameCompressor::~ZstdFrameCompressor() {
  if (cctx_ != nullptr) ZSTD_freeCCtx(cctx_);
}

absl::StatusOr<std::string> ZstdFrameCompressor::Compress(std::string_view data) {
  if (cctx_ == nullptr) {
    return absl::InvalidArgumentError(fmt::format("zstd level {} is not valid", level_));
  }
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress2(cctx_, out.data(), out.size(), data.data(), data.size());
  if (ZSTD_isError(n)) {
    return absl::InternalError(fmt::format("zstd: compress failed: {}", ZSTD_getErrorName(n)));
  }
  out.resize(n);
  return out;
}

}  // namespace lazypull::convert
