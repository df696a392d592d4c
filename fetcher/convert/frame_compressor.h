// Reusable one-shot compressors for the writers: one gzip member / one zstd frame per call,
// keeping the compression context between calls. fetcher/codec's GzipCompress/ZstdCompress
// build a new context per call, which dominates when a layer has thousands of small files
// (one member or frame each). Output is the same kind codec produces.
#ifndef LAZYPULL_FETCHER_CONVERT_FRAME_COMPRESSOR_H_
#define LAZYPULL_FETCHER_CONVERT_FRAME_COMPRESSOR_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct libdeflate_compressor;
struct ZSTD_CCtx_s;

namespace lazypull::convert {

// Not thread-safe: one per writer.
class GzipMemberCompressor {
 public:
  // `level` 1..12 (libdeflate). InvalidArgument otherwise (reported by Compress).
  explicit GzipMemberCompressor(int level);
  ~GzipMemberCompressor();
  // One complete gzip member holding `data`.
  absl::StatusOr<std::string> Compress(std::string_view data);

 private:
  libdeflate_compressor* compressor_ = nullptr;
  int level_;
};

// Not thread-safe: one per writer.
class ZstdFrameCompressor {
 public:
  explicit ZstdFrameCompressor(int level);
  ~ZstdFrameCompressor();
  // One complete zstd frame (content size and checksum recorded) holding `data`.
  absl::StatusOr<std::string> Compress(std::string_view data);

 private:
  ZSTD_CCtx_s* cctx_ = nullptr;
  int level_;
};

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_FRAME_COMPRESSOR_H_
