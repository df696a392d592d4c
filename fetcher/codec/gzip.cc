#include "fetcher/codec/gzip.h"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "base/prefault.h"
#include "fmt/format.h"

namespace lazypull::codec {
namespace {

// Owns a zlib inflate stream.
class Inflater {
 public:
  Inflater() = default;
  ~Inflater() {
    if (initialized_) inflateEnd(&stream_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  absl::Status Init() {
    // 16 + MAX_WBITS: gzip wrapper only (no raw deflate, no zlib wrapper).
    if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
      return absl::InternalError("gunzip: inflateInit2 failed");
    }
    initialized_ = true;
    return absl::OkStatus();
  }
  z_stream* stream() { return &stream_; }

 private:
  z_stream stream_{};
  bool initialized_ = false;
};

// The common case, one whole member, in one libdeflate call into a buffer of exactly the size
// its trailer names (no regrowth, about twice zlib's speed). nullopt when that does not work
// out; the caller then takes zlib's streaming path, which also words every error.
std::optional<std::string> GunzipOneMember(std::string_view compressed, uint64_t max_output) {
  constexpr uint64_t kMinMember = 18;  // 10-byte header, empty deflate block, 8-byte trailer
  constexpr uint64_t kMaxDeflateRatio = 1032;
  if (compressed.size() < kMinMember) return std::nullopt;
  const auto* tail = reinterpret_cast<const uint8_t*>(compressed.data() + compressed.size() - 4);
  const uint64_t isize = static_cast<uint64_t>(tail[0]) | static_cast<uint64_t>(tail[1]) << 8 |
                         static_cast<uint64_t>(tail[2]) << 16 |
                         static_cast<uint64_t>(tail[3]) << 24;
  // ISIZE is untrusted: never allocate more than the cap or than deflate can expand to.
  if (isize > max_output || isize > compressed.size() * kMaxDeflateRatio) return std::nullopt;
  std::unique_ptr<libdeflate_decompressor, decltype(&libdeflate_free_decompressor)> d(
      libdeflate_alloc_decompressor(), &libdeflate_free_decompressor);
  if (d == nullptr) return std::nullopt;
  std::string out;
  out.reserve(isize);
  PrefaultForWrite(out.data(), isize);
  out.resize(isize);
  size_t in_used = 0;
  size_t out_used = 0;
  if (libdeflate_gzip_decompress_ex(d.get(), compressed.data(), compressed.size(), out.data(),
                                    out.size(), &in_used, &out_used) != LIBDEFLATE_SUCCESS ||
      in_used != compressed.size() || out_used != isize) {
    return std::nullopt;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> Gunzip(std::string_view compressed, const GunzipOptions& options) {
  if (compressed.empty()) return absl::DataLossError("gunzip: empty input");
  if (options.stop_after == 0) {
    if (auto out = GunzipOneMember(compressed, options.max_output)) return *std::move(out);
  }
  Inflater inflater;
  if (auto st = inflater.Init(); !st.ok()) return st;
  z_stream* zs = inflater.stream();
  zs->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  uint64_t remaining_in = compressed.size();

  std::string out;
  // Start with a guess (typical ratio), never above the cap + 1 byte used to detect overflow.
  const uint64_t hard_limit = options.stop_after != 0 ? options.stop_after : options.max_output;
  out.resize(std::min<uint64_t>(std::max<uint64_t>(compressed.size() * 4, 4096), hard_limit + 1));
  uint64_t produced = 0;
  int members = 0;
  for (;;) {
    if (zs->avail_in == 0) {
      uInt take = static_cast<uInt>(std::min<uint64_t>(remaining_in, 1u << 30));
      zs->avail_in = take;
      remaining_in -= take;
    }
    if (produced == out.size()) {
      if (produced > hard_limit) break;
      out.resize(std::min<uint64_t>(out.size() * 2, hard_limit + 1));
    }
    uint64_t space = out.size() - produced;
    zs->next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs->avail_out = static_cast<uInt>(std::min<uint64_t>(space, 1u << 30));
    uInt avail_before = zs->avail_out;
    int rc = inflate(zs, Z_NO_FLUSH);
    produced += avail_before - zs->avail_out;
    if (options.stop_after != 0 && produced >= options.stop_after) {
      out.resize(options.stop_after);
      return out;
    }
    if (produced > hard_limit) break;
    if (rc == Z_STREAM_END) {
      ++members;
      if (zs->avail_in == 0 && remaining_in == 0) {
        out.resize(produced);
        return out;
      }
      if (!options.allow_multiple_members) {
        return absl::InvalidArgumentError(fmt::format(
            "gunzip: {} trailing bytes after the gzip member", zs->avail_in + remaining_in));
      }
      if (inflateReset(zs) != Z_OK) return absl::InternalError("gunzip: inflateReset failed");
      continue;
    }
    if (rc == Z_BUF_ERROR) {
      // No progress possible: either out of input mid-member or out of output space.
      if (zs->avail_in == 0 && remaining_in == 0) {
        return absl::DataLossError(
            fmt::format("gunzip: truncated input: {} bytes end inside gzip member {}",
                        compressed.size(), members + 1));
      }
      continue;
    }
    if (rc != Z_OK) {
      return absl::DataLossError(fmt::format("gunzip: corrupt gzip member {} at input byte {}: {}",
                                             members + 1,
                                             compressed.size() - remaining_in - zs->avail_in,
                                             zs->msg != nullptr ? zs->msg : "inflate error"));
    }
    if (zs->avail_in == 0 && remaining_in == 0 && zs->avail_out != 0) {
      return absl::DataLossError(
          fmt::format("gunzip: truncated input: stream ends inside gzip member {}", members + 1));
    }
  }
  return absl::ResourceExhaustedError(fmt::format(
      "gunzip: decompressed size exceeds the limit of {} bytes (possible gzip bomb)", hard_limit));
}

absl::StatusOr<std::string> GzipCompress(std::string_view data, int level) {
  if (level < 0 || level > 12) {
    return absl::InvalidArgumentError(
        fmt::format("gzip: compression level {} not in 0..12", level));
  }
  std::unique_ptr<libdeflate_compressor, decltype(&libdeflate_free_compressor)> c(
      libdeflate_alloc_compressor(level), &libdeflate_free_compressor);
  if (c == nullptr) return absl::ResourceExhaustedError("gzip: cannot allocate compressor");
  std::string out(libdeflate_gzip_compress_bound(c.get(), data.size()), '\0');
  size_t n = libdeflate_gzip_compress(c.get(), data.data(), data.size(), out.data(), out.size());
  if (n == 0) return absl::InternalError("gzip: compression output exceeded its bound");
  out.resize(n);
  return out;
}

}  // namespace lazypull::codec
