#include "fetcher/convert/layer_decompressor.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <memory>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::convert {
namespace {

constexpr uint64_t kReadSize = 1 << 20;

absl::Status GunzipStream(BlobReader& blob, BlobSink& out, const std::string& what) {
  z_stream zs{};
  // 16 + MAX_WBITS: gzip wrapper only.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError("inflateInit2 failed");
  }
  std::unique_ptr<z_stream, void (*)(z_stream*)> guard(&zs, [](z_stream* z) { inflateEnd(z); });
  std::string outbuf(kReadSize, '\0');
  uint64_t pos = 0;
  const uint64_t size = blob.Size();
  bool member_open = false;
  while (pos < size) {
    auto in = blob.ReadAt(pos, std::min(kReadSize, size - pos));
    if (!in.ok()) return in.status();
    zs.next_in = reinterpret_cast<Bytef*>(in->data());
    zs.avail_in = in->size();
    while (zs.avail_in > 0) {
      zs.next_out = reinterpret_cast<Bytef*>(outbuf.data());
      zs.avail_out = outbuf.size();
      int rc = inflate(&zs, Z_NO_FLUSH);
      member_open = true;
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        return absl::DataLossError(fmt::format("gunzip {} at compressed offset {}: {}", what,
                                               pos + (in->size() - zs.avail_in),
                                               zs.msg ? zs.msg : "corrupt data"));
      }
      size_t produced = outbuf.size() - zs.avail_out;
      if (produced > 0) {
        if (auto st = out.Append(std::string_view(outbuf.data(), produced)); !st.ok()) return st;
      }
      if (rc == Z_STREAM_END) {
        member_open = false;
        // Another member may follow (eStargz and pigz write many).
        if (inflateReset(&zs) != Z_OK) return absl::InternalError("inflateReset failed");
        if (zs.avail_in > 0 && static_cast<unsigned char>(*zs.next_in) != 0x1f) {
          // Trailing zero padding after the last member is tolerated, as gzip does.
          bool zeros =
              std::all_of(zs.next_in, zs.next_in + zs.avail_in, [](Bytef b) { return b == 0; });
          if (!zeros) {
            return absl::DataLossError(fmt::format("gunzip {}: garbage after member", what));
          }
          zs.avail_in = 0;
        }
      } else if (rc == Z_BUF_ERROR && produced == 0 && zs.avail_in > 0) {
        return absl::DataLossError(fmt::format("gunzip {}: no progress", what));
      }
    }
    pos += in->size();
  }
  if (member_open && zs.total_in != 0) {
    return absl::DataLossError(fmt::format("gunzip {}: truncated gzip member", what));
  }
  return absl::OkStatus();
}

absl::Status UnzstdStream(BlobReader& blob, BlobSink& out, const std::string& what) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, 31);
  std::string outbuf(ZSTD_DStreamOutSize(), '\0');
  uint64_t pos = 0;
  const uint64_t size = blob.Size();
  size_t last_rc = 0;
  while (pos < size) {
    auto in = blob.ReadAt(pos, std::min(kReadSize, size - pos));
    if (!in.ok()) return in.status();
    ZSTD_inBuffer ib{in->data(), in->size(), 0};
    while (ib.pos < ib.size) {
      ZSTD_outBuffer ob{outbuf.data(), outbuf.size(), 0};
      size_t rc = ZSTD_decompressStream(dctx.get(), &ob, &ib);
      if (ZSTD_isError(rc)) {
        return absl::DataLossError(fmt::format("zstd decompress {} near offset {}: {}", what,
                                               pos + ib.pos, ZSTD_getErrorName(rc)));
      }
      last_rc = rc;
      if (ob.pos > 0) {
        if (auto st = out.Append(std::string_view(outbuf.data(), ob.pos)); !st.ok()) return st;
      }
    }
    pos += in->size();
  }
  // Drain output still buffered inside a frame that has all its input.
  while (last_rc != 0) {
    ZSTD_inBuffer ib{nullptr, 0, 0};
    ZSTD_outBuffer ob{outbuf.data(), outbuf.size(), 0};
    size_t rc = ZSTD_decompressStream(dctx.get(), &ob, &ib);
    if (ZSTD_isError(rc)) {
      return absl::DataLossError(
          fmt::format("zstd decompress {}: {}", what, ZSTD_getErrorName(rc)));
    }
    if (ob.pos == 0) break;
    last_rc = rc;
    if (auto st = out.Append(std::string_view(outbuf.data(), ob.pos)); !st.ok()) return st;
  }
  if (last_rc != 0) {
    return absl::DataLossError(fmt::format("zstd decompress {}: truncated frame", what));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<InputCompression> SniffCompression(BlobReader& blob) {
  if (blob.Size() < 4) return InputCompression::kNone;
  auto head = blob.ReadAt(0, 4);
  if (!head.ok()) return head.status();
  const auto* b = reinterpret_cast<const unsigned char*>(head->data());
  if (b[0] == 0x1f && b[1] == 0x8b) return InputCompression::kGzip;
  if (b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) return InputCompression::kZstd;
  return InputCompression::kNone;
}

absl::StatusOr<DecompressedLayer> DecompressLayer(BlobReader& blob, InputCompression compression,
                                                  BlobSink& out, const std::string& what) {
  absl::Status st;
  switch (compression) {
    case InputCompression::kGzip:
      st = GunzipStream(blob, out, what);
      break;
    case InputCompression::kZstd:
      st = UnzstdStream(blob, out, what);
      break;
    case InputCompression::kNone: {
      uint64_t pos = 0;
      while (pos < blob.Size() && st.ok()) {
        auto in = blob.ReadAt(pos, std::min(kReadSize, blob.Size() - pos));
        if (!in.ok()) return in.status();
        st = out.Append(*in);
        pos += in->size();
      }
      break;
    }
  }
  if (!st.ok()) return st;
  DecompressedLayer result;
  result.size = out.size();
  auto digest = out.Finish();
  if (!digest.ok()) return digest.status();
  result.diff_id = *digest;
  return result;
}

}  // namespace lazypull::convert
