#include "fetcher/format/soci/fine_index.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "fmt/format.h"
#include "lazypull/digest.h"

namespace lazypull::soci {
namespace {

constexpr std::string_view kMagic(kFineMagic, 8);

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("fine index: {}", what));
}

void PutLE(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLE(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
  return v;
}

}  // namespace

absl::StatusOr<std::string> SerializeFineFrame(const FineFrame& frame) {
  std::string out(kMagic);
  PutLE(out, kFineVersion, 4);
  PutLE(out, frame.windows.size(), 4);
  PutLE(out, frame.ztoc.size(), 8);
  for (const FineWindow& w : frame.windows) {
    if (w.length == 0 || w.length > kMaxFineWindowBytes) {
      return Invalid(fmt::format("window of {} compressed bytes", w.length));
    }
    PutLE(out, w.offset, 8);
    PutLE(out, w.length, 4);
    out.append(reinterpret_cast<const char*>(w.sha256.data()), w.sha256.size());
  }
  out.append(frame.ztoc);
  return out;
}

absl::StatusOr<FineFrame> ParseFineFrame(std::string_view bytes, const FineLimits& limits) {
  if (bytes.size() < kFineHeaderSize) {
    return Invalid(fmt::format("{} bytes, shorter than the header", bytes.size()));
  }
  if (bytes.substr(0, 8) != kMagic) return Invalid("bad magic");
  const uint64_t version = GetLE(bytes, 8, 4);
  if (version != kFineVersion) return Invalid(fmt::format("unknown version {}", version));
  const uint64_t count = GetLE(bytes, 12, 4);
  const uint64_t ztoc_length = GetLE(bytes, 16, 8);
  if (count > limits.max_windows) {
    return absl::ResourceExhaustedError(
        fmt::format("fine index: {} windows (limit {})", count, limits.max_windows));
  }
  if (ztoc_length > limits.max_ztoc_bytes) {
    return absl::ResourceExhaustedError(
        fmt::format("fine index: zTOC of {} bytes (limit {})", ztoc_length, limits.max_ztoc_bytes));
  }
  const uint64_t table_end = kFineHeaderSize + count * kFineWindowRecordSize;
  if (table_end > bytes.size() || bytes.size() - table_end != ztoc_length) {
    return Invalid(fmt::format("{} bytes do not hold a {}-window table and a {}-byte zTOC",
                               bytes.size(), count, ztoc_length));
  }
  FineFrame frame;
  frame.windows.reserve(count);
  uint64_t next = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const size_t at = kFineHeaderSize + i * kFineWindowRecordSize;
    FineWindow w;
    w.offset = GetLE(bytes, at, 8);
    w.length = static_cast<uint32_t>(GetLE(bytes, at + 8, 4));
    std::memcpy(w.sha256.data(), bytes.data() + at + 12, w.sha256.size());
    if (w.length == 0 || w.length > kMaxFineWindowBytes) {
      return Invalid(fmt::format("window {} has {} compressed bytes", i, w.length));
    }
    if (w.offset < next || w.offset > UINT64_MAX - w.length) {
      return Invalid(fmt::format("window {} at offset {} overlaps the one before", i, w.offset));
    }
    next = w.offset + w.length;
    frame.windows.push_back(w);
  }
  frame.ztoc.assign(bytes.substr(table_end));
  return frame;
}

absl::StatusOr<FineFrame> DecodeFineBlob(std::string_view blob, const FineLimits& limits) {
  codec::ZstdDecompressOptions zopts;
  zopts.max_output =
      kFineHeaderSize + limits.max_windows * kFineWindowRecordSize + limits.max_ztoc_bytes;
  absl::StatusOr<std::string> framed = codec::ZstdDecompress(blob, zopts);
  if (!framed.ok()) {
    return absl::Status(framed.status().code(),
                        fmt::format("fine index: {}", std::string(framed.status().message())));
  }
  return ParseFineFrame(*framed, limits);
}

absl::StatusOr<FineIndexBlobs> BuildFineIndex(BlobReader& layer, const ZtocBuildOptions& options,
                                              const std::string& windows_path) {
  FineIndexBlobs out;
  FineFrame frame;
  absl::Status window_error;
  std::ofstream file(windows_path, std::ios::binary | std::ios::trunc);
  if (!file) {
    return absl::InternalError(
        fmt::format("fine index: cannot create {}: {}", windows_path, std::strerror(errno)));
  }
  Sha256 sha_of_blob;
  // Each window is compressed and written as the builder finds it.
  ZtocBuildOptions fine_options = options;
  fine_options.window_sink = [&](size_t i, std::string_view window) {
    if (!window_error.ok()) return;
    absl::StatusOr<std::string> z = codec::ZstdCompress(window, 3);
    if (!z.ok() || i != frame.windows.size()) {
      window_error = z.ok() ? absl::InternalError("fine index: windows out of order") : z.status();
      return;
    }
    FineWindow w;
    w.offset = out.windows_size;
    w.length = static_cast<uint32_t>(z->size());
    const std::string sha = Digest::Of(window).Raw();
    std::memcpy(w.sha256.data(), sha.data(), w.sha256.size());
    frame.windows.push_back(w);
    file.write(z->data(), static_cast<std::streamsize>(z->size()));
    sha_of_blob.Update(*z);
    out.windows_size += z->size();
  };
  absl::StatusOr<Ztoc> ztoc = BuildZtoc(layer, fine_options);
  if (!ztoc.ok()) return ztoc.status();
  if (!window_error.ok()) return window_error;
  file.close();
  if (!file) {
    return absl::InternalError(
        fmt::format("fine index: writing {}: {}", windows_path, std::strerror(errno)));
  }
  out.windows_digest = sha_of_blob.Finish();
  const size_t n = ztoc->checkpoints.size();
  if (frame.windows.size() != n) {
    return absl::InternalError(
        fmt::format("fine index: {} windows for {} checkpoints", frame.windows.size(), n));
  }
  absl::StatusOr<std::string> bytes = SerializeZtoc(*ztoc);
  if (!bytes.ok()) return bytes.status();
  frame.ztoc = std::move(*bytes);
  absl::StatusOr<std::string> framed = SerializeFineFrame(frame);
  if (!framed.ok()) return framed.status();
  // Level 9: the blob is written once and fetched at every mount (the file table gains a
  // little over the default level).
  absl::StatusOr<std::string> fine = codec::ZstdCompress(*framed, 9);
  if (!fine.ok()) return fine.status();
  out.fine = std::move(*fine);
  out.spans = n;
  return out;
}

}  // namespace lazypull::soci
