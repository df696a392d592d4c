#include "fetcher/format/soci/span_inflater.h"

#include <zlib.h>

#include <algorithm>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

constexpr size_t kGzipTrailerSize = 8;  // CRC32 + ISIZE
constexpr int kRawWindowBits = -15;
constexpr int kAutoHeaderWindowBits = 15 + 32;  // gzip or zlib header, detected

// Owns a z_stream for the duration of one span.
class Inflater {
 public:
  Inflater() = default;
  ~Inflater() {
    if (initialized_) inflateEnd(&z_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  absl::Status Init() {
    if (inflateInit2(&z_, kRawWindowBits) != Z_OK) {
      return absl::ResourceExhaustedError("span inflate: zlib init failed");
    }
    initialized_ = true;
    return absl::OkStatus();
  }
  z_stream& z() { return z_; }

 private:
  z_stream z_{};
  bool initialized_ = false;
};

absl::Status Corrupt(const Checkpoint& cp, uint64_t produced, std::string_view why) {
  return absl::DataLossError(
      fmt::format("span at compressed offset {} (uncompressed {}): {} after {} bytes",
                  cp.compressed_offset, cp.uncompressed_offset, why, produced));
}

}  // namespace

absl::StatusOr<std::string> InflateSpan(const Checkpoint& checkpoint, std::string_view compressed,
                                        uint64_t uncompressed_length,
                                        const SpanInflateOptions& options) {
  if (checkpoint.window.size() != kWindowSize) {
    return absl::InvalidArgumentError(
        fmt::format("span inflate: window of {} bytes", checkpoint.window.size()));
  }
  if (checkpoint.bits > 7 || (checkpoint.bits != 0 && compressed.empty())) {
    return absl::InvalidArgumentError("span inflate: no byte holds the checkpoint's bits");
  }
  Inflater inflater;
  if (auto st = inflater.Init(); !st.ok()) return st;
  z_stream& z = inflater.z();
  if (checkpoint.bits != 0) {
    const int byte = static_cast<uint8_t>(compressed[0]);
    if (inflatePrime(&z, checkpoint.bits, byte >> (8 - checkpoint.bits)) != Z_OK) {
      return Corrupt(checkpoint, 0, "cannot prime the leftover bits");
    }
    compressed.remove_prefix(1);
  }
  if (inflateSetDictionary(&z, reinterpret_cast<const Bytef*>(checkpoint.window.data()),
                           kWindowSize) != Z_OK) {
    return Corrupt(checkpoint, 0, "cannot set the window");
  }

  std::string out(uncompressed_length, '\0');
  uint64_t produced = 0;
  bool raw_mode = true;  // until the first member end: then headers are parsed by zlib
  // zlib counts in uInt: feed and drain in pieces.
  constexpr uint64_t kStep = 1u << 30;
  auto feed = [&] {
    if (z.avail_in == 0 && !compressed.empty()) {
      const size_t n = std::min<uint64_t>(compressed.size(), kStep);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
      z.avail_in = static_cast<uInt>(n);
      compressed.remove_prefix(n);
    }
  };
  // Handles the end of a gzip member: skip the trailer in raw mode, then parse what follows
  // as a new member. Returns false when no input remains.
  auto next_member = [&]() -> absl::StatusOr<bool> {
    if (raw_mode) {
      size_t drop = kGzipTrailerSize;
      while (drop > 0) {
        feed();
        if (z.avail_in == 0) return Corrupt(checkpoint, produced, "input ends in a member trailer");
        const size_t n = std::min<size_t>(drop, z.avail_in);
        z.next_in += n;
        z.avail_in -= static_cast<uInt>(n);
        drop -= n;
      }
      raw_mode = false;
    }
    feed();
    if (z.avail_in == 0) return false;
    if (inflateReset2(&z, kAutoHeaderWindowBits) != Z_OK) {
      return Corrupt(checkpoint, produced, "cannot start the next member");
    }
    return true;
  };

  // Z_BLOCK: return at every deflate block boundary, so that `at_boundary` tells whether the
  // decoder stopped right after an end-of-block code (Z_NO_FLUSH would run on into the next
  // block's header, which lies past the span).
  bool at_boundary = false;
  while (produced < uncompressed_length) {
    feed();
    if (z.avail_in == 0) return Corrupt(checkpoint, produced, "input ends early");
    const uint64_t want = std::min<uint64_t>(uncompressed_length - produced, kStep);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    z.avail_out = static_cast<uInt>(want);
    const int ret = inflate(&z, Z_BLOCK);
    produced += want - z.avail_out;
    at_boundary = false;
    if (ret == Z_STREAM_END) {
      auto more = next_member();
      if (!more.ok()) return more.status();
      if (!*more && produced < uncompressed_length) {
        return Corrupt(checkpoint, produced, "gzip stream ends early");
      }
      continue;
    }
    if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR || ret == Z_MEM_ERROR) {
      return Corrupt(checkpoint, produced,
                     fmt::format("corrupt deflate data ({})", z.msg ? z.msg : "zlib error"));
    }
    at_boundary = (z.data_type & 128) != 0;
  }
  if (!options.expect_block_end) return out;

  // The next checkpoint starts here. Decode on without output space: empty blocks, a member
  // end (trailer, next header) may follow, but no more data; the input must run out exactly
  // at a block boundary.
  Bytef none = 0;
  for (int guard = 0; guard < 64; ++guard) {
    feed();
    if (z.avail_in == 0 && compressed.empty() && at_boundary) return out;
    z.next_out = &none;
    z.avail_out = 0;
    const int ret = inflate(&z, Z_BLOCK);
    at_boundary = false;
    if (ret == Z_STREAM_END) {
      auto more = next_member();
      if (!more.ok()) return more.status();
      if (!*more) return out;  // the blob ends exactly here
      continue;
    }
    if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR || ret == Z_MEM_ERROR) {
      return Corrupt(checkpoint, produced, "corrupt deflate data at the span end");
    }
    at_boundary = (z.data_type & 128) != 0;
    if (!at_boundary && ret == Z_BUF_ERROR) {
      // No progress without output space.
      if (z.avail_in == 0 && compressed.empty()) {
        return Corrupt(checkpoint, produced, "span does not end at a deflate block boundary");
      }
      return Corrupt(checkpoint, produced,
                     "span holds more compressed data than its uncompressed length");
    }
  }
  return Corrupt(checkpoint, produced, "span end not reached");
}

}  // namespace lazypull::soci
