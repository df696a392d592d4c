#include "fetcher/format/soci/zinfo_checkpoints.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

// The blob's integers are little-endian whatever the host (gzip_zinfo.c converts with
// htole*/le*toh); decode byte by byte so an unaligned blob is fine too.
uint64_t LoadLe(std::string_view b, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(b[off + i])) << (8 * i);
  }
  return v;
}

void StoreLe(std::string& out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The window of the implied v1 checkpoint 0.
const std::string& ZeroWindow() {
  static const std::string* const kZero = new std::string(kWindowSize, '\0');
  return *kZero;
}

}  // namespace

absl::StatusOr<ZinfoCheckpoints> ZinfoCheckpoints::Parse(std::string blob, size_t max_checkpoints) {
  return ParseRecords(std::move(blob), max_checkpoints, /*windowless=*/false);
}

absl::StatusOr<ZinfoCheckpoints> ZinfoCheckpoints::ParseWindowless(std::string blob,
                                                                   size_t max_checkpoints) {
  return ParseRecords(std::move(blob), max_checkpoints, /*windowless=*/true);
}

absl::StatusOr<ZinfoCheckpoints> ZinfoCheckpoints::ParseRecords(std::string blob,
                                                                size_t max_checkpoints,
                                                                bool windowless) {
  if (blob.size() < kZinfoHeaderSize) {
    return absl::InvalidArgumentError(
        fmt::format("zinfo checkpoints: {} bytes, shorter than the {}-byte header", blob.size(),
                    kZinfoHeaderSize));
  }
  const int32_t count = static_cast<int32_t>(static_cast<uint32_t>(LoadLe(blob, 0, 4)));
  const int64_t span_size = static_cast<int64_t>(LoadLe(blob, 4, 8));
  if (count <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("zinfo checkpoints: header claims {} checkpoints", count));
  }
  if (static_cast<size_t>(count) > max_checkpoints) {
    return absl::InvalidArgumentError(fmt::format(
        "zinfo checkpoints: header claims {} checkpoints (limit {})", count, max_checkpoints));
  }
  if (span_size < 0) {
    return absl::InvalidArgumentError(
        fmt::format("zinfo checkpoints: negative span size {}", span_size));
  }
  const uint64_t body = blob.size() - kZinfoHeaderSize;
  ZinfoCheckpoints z;
  size_t first_record = 0;
  const size_t record = windowless ? kWindowlessRecordSize : kCheckpointRecordSize;
  if (windowless) {
    if (body != static_cast<uint64_t>(count) * kWindowlessRecordSize) {
      return absl::InvalidArgumentError(fmt::format(
          "zinfo checkpoints: {} bytes do not hold {} windowless checkpoints", blob.size(), count));
    }
    z.version_ = ZinfoVersion::kV2;
  } else if (body == static_cast<uint64_t>(count) * kCheckpointRecordSize) {
    z.version_ = ZinfoVersion::kV2;
  } else if (body == static_cast<uint64_t>(count - 1) * kCheckpointRecordSize) {
    z.version_ = ZinfoVersion::kV1;
    first_record = 1;
    z.entries_.push_back(Entry{.in = 10, .out = 0, .bits = 0, .window_offset = -1});
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "zinfo checkpoints: {} bytes fit neither version for {} checkpoints (v2 needs {}, v1 {})",
        blob.size(), count, kZinfoHeaderSize + static_cast<uint64_t>(count) * kCheckpointRecordSize,
        kZinfoHeaderSize + static_cast<uint64_t>(count - 1) * kCheckpointRecordSize));
  }
  z.span_size_ = static_cast<uint64_t>(span_size);
  z.entries_.reserve(count);
  size_t off = kZinfoHeaderSize;
  for (int32_t i = first_record; i < count; ++i) {
    Entry e;
    const int64_t in = static_cast<int64_t>(LoadLe(blob, off, 8));
    const int64_t out = static_cast<int64_t>(LoadLe(blob, off + 8, 8));
    if (in < 0 || out < 0) {
      return absl::InvalidArgumentError(
          fmt::format("zinfo checkpoint {}: negative offset (in {}, out {})", i, in, out));
    }
    e.in = static_cast<uint64_t>(in);
    e.out = static_cast<uint64_t>(out);
    e.bits = static_cast<uint8_t>(blob[off + 16]);
    e.window_offset = windowless ? -1 : static_cast<int64_t>(off + 17);
    z.entries_.push_back(e);
    off += record;
  }
  for (size_t i = 0; i < z.entries_.size(); ++i) {
    const Entry& e = z.entries_[i];
    if (e.bits > 7) {
      return absl::InvalidArgumentError(
          fmt::format("zinfo checkpoint {}: {} bits (at most 7)", i, e.bits));
    }
    if (e.bits != 0 && e.in == 0) {
      return absl::InvalidArgumentError(
          fmt::format("zinfo checkpoint {}: bits at compressed offset 0", i));
    }
    if (i == 0 && e.out != 0) {
      return absl::InvalidArgumentError(
          fmt::format("zinfo checkpoint 0: uncompressed offset {} (must be 0)", e.out));
    }
    if (i > 0) {
      const Entry& p = z.entries_[i - 1];
      if (e.in <= p.in || e.out <= p.out) {
        return absl::InvalidArgumentError(fmt::format(
            "zinfo checkpoint {}: offsets (in {}, out {}) do not increase past checkpoint {} "
            "(in {}, out {})",
            i, e.in, e.out, i - 1, p.in, p.out));
      }
    }
  }
  z.blob_ = std::move(blob);
  return z;
}

absl::StatusOr<std::string> ZinfoCheckpoints::SerializeWindowless(
    uint64_t span_size, const std::vector<OwnedCheckpoint>& checkpoints) {
  if (checkpoints.empty() || checkpoints.size() > INT32_MAX) {
    return absl::InvalidArgumentError(
        fmt::format("zinfo: cannot serialize {} checkpoints", checkpoints.size()));
  }
  std::string out;
  out.reserve(kZinfoHeaderSize + checkpoints.size() * kWindowlessRecordSize);
  StoreLe(out, checkpoints.size(), 4);
  StoreLe(out, span_size, 8);
  for (const OwnedCheckpoint& c : checkpoints) {
    StoreLe(out, c.compressed_offset, 8);
    StoreLe(out, c.uncompressed_offset, 8);
    out.push_back(static_cast<char>(c.bits));
  }
  return out;
}

absl::StatusOr<std::string> ZinfoCheckpoints::SerializeV2(
    uint64_t span_size, const std::vector<OwnedCheckpoint>& checkpoints) {
  if (checkpoints.empty() || checkpoints.size() > INT32_MAX) {
    return absl::InvalidArgumentError(
        fmt::format("zinfo: cannot serialize {} checkpoints", checkpoints.size()));
  }
  std::string out;
  out.reserve(kZinfoHeaderSize + checkpoints.size() * kCheckpointRecordSize);
  StoreLe(out, checkpoints.size(), 4);
  StoreLe(out, span_size, 8);
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    const OwnedCheckpoint& c = checkpoints[i];
    if (c.window.size() != kWindowSize) {
      return absl::InvalidArgumentError(
          fmt::format("zinfo: checkpoint {} has a {}-byte window", i, c.window.size()));
    }
    StoreLe(out, c.compressed_offset, 8);
    StoreLe(out, c.uncompressed_offset, 8);
    out.push_back(static_cast<char>(c.bits));
    out.append(c.window);
  }
  return out;
}

Checkpoint ZinfoCheckpoints::at(size_t i) const {
  const Entry& e = entries_[i];
  Checkpoint c;
  c.compressed_offset = e.in;
  c.uncompressed_offset = e.out;
  c.bits = e.bits;
  c.window = e.window_offset < 0 ? std::string_view(ZeroWindow())
                                 : std::string_view(blob_).substr(
                                       static_cast<size_t>(e.window_offset), kWindowSize);
  return c;
}

size_t ZinfoCheckpoints::IndexForUncompressedOffset(uint64_t offset) const {
  auto it = std::upper_bound(entries_.begin(), entries_.end(), offset,
                             [](uint64_t v, const Entry& e) { return v < e.out; });
  if (it == entries_.begin()) return 0;
  return static_cast<size_t>(it - entries_.begin()) - 1;
}

}  // namespace lazypull::soci
