#include "fetcher/codec/zstd.h"

#include <zstd.h>

#include <algorithm>
#include <memory>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::codec {
namespace {

// Largest output buffer allocated before any byte is produced.
constexpr uint64_t kMaxTrustedInitialOutput = 4 << 20;

}  // namespace

absl::StatusOr<std::string> ZstdDecompress(std::string_view compressed,
                                           const ZstdDecompressOptions& options) {
  if (compressed.empty()) return absl::DataLossError("zstd: empty input");
  std::unique_ptr<ZSTD_DStream, decltype(&ZSTD_freeDStream)> ds(ZSTD_createDStream(),
                                                                &ZSTD_freeDStream);
  if (ds == nullptr) return absl::ResourceExhaustedError("zstd: cannot allocate decoder");
  // Refuse windows above 128 MiB so a hostile frame cannot make us allocate gigabytes.
  ZSTD_DCtx_setParameter(ds.get(), ZSTD_d_windowLogMax, 27);

  const uint64_t hard_limit = options.stop_after != 0 ? options.stop_after : options.max_output;
  std::string out;
  unsigned long long declared = ZSTD_getFrameContentSize(compressed.data(), compressed.size());
  uint64_t initial = std::max<uint64_t>(compressed.size() * 4, 4096);
  if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != ZSTD_CONTENTSIZE_ERROR) {
    initial = std::max<uint64_t>(declared, 1);
  }
  // The frame header is untrusted: a declared size only sizes the first allocation up to a
  // bound; beyond it the buffer grows with what the frame really produces.
  initial = std::min<uint64_t>(initial, kMaxTrustedInitialOutput);
  out.resize(std::min<uint64_t>(initial, hard_limit + 1));

  ZSTD_inBuffer in{compressed.data(), compressed.size(), 0};
  uint64_t produced = 0;
  size_t last = 0;
  for (;;) {
    if (produced == out.size()) {
      if (produced > hard_limit) break;
      out.resize(std::min<uint64_t>(out.size() * 2, hard_limit + 1));
    }
    ZSTD_outBuffer ob{out.data() + produced, out.size() - produced, 0};
    size_t in_before = in.pos;
    last = ZSTD_decompressStream(ds.get(), &ob, &in);
    produced += ob.pos;
    if (ZSTD_isError(last)) {
      return absl::DataLossError(
          fmt::format("zstd: corrupt frame at input byte {}: {}", in.pos, ZSTD_getErrorName(last)));
    }
    if (produced > hard_limit) break;
    if (in.pos == in.size) {
      // last == 0: the final frame is complete and fully flushed.
      if (last == 0) {
        out.resize(produced);
        return out;
      }
      // No input left and the decoder made no progress with free output space: truncated.
      if (ob.pos < ob.size && in.pos == in_before && ob.pos == 0) {
        return absl::DataLossError("zstd: truncated input: stream ends inside a frame");
      }
    }
  }
  return absl::ResourceExhaustedError(fmt::format(
      "zstd: decompressed size exceeds the limit of {} bytes (possible zstd bomb)", hard_limit));
}

absl::StatusOr<std::string> ZstdCompress(std::string_view data, int level) {
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
    return absl::InvalidArgumentError(
        fmt::format("zstd: compression level {} out of range", level));
  }
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), &ZSTD_freeCCtx);
  if (cctx == nullptr) return absl::ResourceExhaustedError("zstd: cannot allocate encoder");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), data.data(), data.size());
  if (ZSTD_isError(n)) {
    return absl::InternalError(fmt::format("zstd: compress failed: {}", ZSTD_getErrorName(n)));
  }
  out.resize(n);
  return out;
}

absl::StatusOr<std::string> ZstdSkippableFrame(std::string_view payload) {
  if (payload.size() > 0xFFFFFFFFull) {
    return absl::InvalidArgumentError(
        fmt::format("zstd: skippable frame payload of {} bytes exceeds 4 GiB", payload.size()));
  }
  std::string out;
  out.reserve(kZstdSkippableHeaderSize + payload.size());
  auto put32 = [&out](uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put32(kZstdSkippableMagic);
  put32(static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

}  // namespace lazypull::codec
