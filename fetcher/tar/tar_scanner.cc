#include "fetcher/tar/tar_scanner.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "fmt/format.h"

namespace lazypull::tar {
namespace {

// Header field positions (ustar; GNU reuses the prefix area for atime/ctime).
constexpr size_t kNameOff = 0, kNameLen = 100;
constexpr size_t kModeOff = 100, kUidOff = 108, kGidOff = 116;
constexpr size_t kSizeOff = 124, kMtimeOff = 136, kChksumOff = 148;
constexpr size_t kTypeOff = 156, kLinkOff = 157, kLinkLen = 100;
constexpr size_t kMagicOff = 257, kUnameOff = 265, kGnameOff = 297;
constexpr size_t kDevMajorOff = 329, kDevMinorOff = 337;
constexpr size_t kPrefixOff = 345, kPrefixLen = 155;
constexpr size_t kGnuAtimeOff = 345, kGnuCtimeOff = 357;

std::string CString(std::string_view block, size_t off, size_t len) {
  std::string_view f = block.substr(off, len);
  size_t nul = f.find('\0');
  return std::string(f.substr(0, nul));
}

// Parses an octal (possibly space/NUL padded) or GNU base-256 numeric field.
absl::StatusOr<int64_t> ParseNumeric(std::string_view block, size_t off, size_t len,
                                     const char* what, uint64_t at) {
  std::string_view f = block.substr(off, len);
  if (!f.empty() && (static_cast<unsigned char>(f[0]) & 0x80)) {
    // Base-256: big-endian two's complement, the top bit of the first byte is the marker.
    bool negative = static_cast<unsigned char>(f[0]) & 0x40;
    uint64_t v = negative ? ~0ull : 0;
    for (size_t i = 0; i < f.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(f[i]);
      if (i == 0) c &= 0x7f;
      if (i == 0 && negative) c |= 0x80;
      if (i + 8 < f.size() && ((negative && c != 0xff) || (!negative && c != 0))) {
        return absl::DataLossError(fmt::format("tar header at {}: {} overflows", at, what));
      }
      v = (v << 8) | c;
    }
    return static_cast<int64_t>(v);
  }
  // Octal: leading spaces, digits, then NUL or space terminators.
  size_t i = 0;
  while (i < f.size() && (f[i] == ' ' || f[i] == '\0')) {
    if (f[i] == '\0') {
      // An all-NUL field reads as 0 (some writers leave unused fields empty).
      bool all_nul = true;
      for (char c : f.substr(i)) all_nul &= (c == '\0' || c == ' ');
      if (all_nul) return 0;
    }
    ++i;
  }
  uint64_t v = 0;
  bool any = false;
  for (; i < f.size(); ++i) {
    char c = f[i];
    if (c == ' ' || c == '\0') break;
    if (c < '0' || c > '7') {
      return absl::DataLossError(fmt::format("tar header at {}: {} field is not octal", at, what));
    }
    if (v >> 60) {
      return absl::DataLossError(fmt::format("tar header at {}: {} overflows", at, what));
    }
    v = v * 8 + (c - '0');
    any = true;
  }
  for (; i < f.size(); ++i) {
    if (f[i] != ' ' && f[i] != '\0') {
      return absl::DataLossError(
          fmt::format("tar header at {}: {} field has trailing garbage", at, what));
    }
  }
  if (!any) return 0;
  return static_cast<int64_t>(v);
}

bool IsZeroBlock(std::string_view block) {
  for (char c : block) {
    if (c != '\0') return false;
  }
  return true;
}

absl::Status VerifyChecksum(std::string_view block, uint64_t at) {
  auto want = ParseNumeric(block, kChksumOff, 8, "checksum", at);
  if (!want.ok()) return want.status();
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < block.size(); ++i) {
    unsigned char c = (i >= kChksumOff && i < kChksumOff + 8) ? ' ' : block[i];
    unsigned_sum += c;
    signed_sum += static_cast<signed char>(c);
  }
  if (*want != unsigned_sum && *want != signed_sum) {
    return absl::DataLossError(fmt::format(
        "tar header at {}: checksum {} does not match computed {}", at, *want, unsigned_sum));
  }
  return absl::OkStatus();
}

// Parses a PAX time "SEC[.FRAC]" (SEC may be negative).
absl::StatusOr<TarTime> ParsePaxTime(std::string_view v, uint64_t at) {
  TarTime t;
  std::string_view sec = v, frac;
  if (size_t dot = v.find('.'); dot != std::string_view::npos) {
    sec = v.substr(0, dot);
    frac = v.substr(dot + 1);
  }
  if (!absl::SimpleAtoi(absl::string_view(sec.data(), sec.size()), &t.sec)) {
    return absl::InvalidArgumentError(fmt::format("tar PAX time at {}: bad value {}", at, v));
  }
  int64_t ns = 0;
  for (size_t i = 0; i < 9; ++i) {
    char c = i < frac.size() ? frac[i] : '0';
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(fmt::format("tar PAX time at {}: bad value {}", at, v));
    }
    ns = ns * 10 + (c - '0');
  }
  bool negative = !sec.empty() && sec[0] == '-';
  if (negative && ns != 0) {
    // "-1.25" is 1.25 s before the epoch: -2 s + 0.75 s.
    t.sec -= 1;
    ns = 1000000000 - ns;
  }
  t.nsec = static_cast<int32_t>(ns);
  return t;
}

// Parses PAX records "LEN KEY=VALUE\n" into `out` (later records win).
absl::Status ParsePaxRecords(std::string_view data, uint64_t at,
                             std::map<std::string, std::string>& out) {
  while (!data.empty()) {
    if (data.find_first_not_of('\0') == std::string_view::npos) break;  // trailing padding
    size_t sp = data.find(' ');
    uint64_t len = 0;
    if (sp == std::string_view::npos ||
        !absl::SimpleAtoi(absl::string_view(data.data(), sp), &len) || len <= sp + 1 ||
        len > data.size() || data[len - 1] != '\n') {
      return absl::InvalidArgumentError(fmt::format("tar PAX header at {}: malformed record", at));
    }
    std::string_view rec = data.substr(sp + 1, len - sp - 2);
    size_t eq = rec.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(
          fmt::format("tar PAX header at {}: record without key", at));
    }
    out[std::string(rec.substr(0, eq))] = std::string(rec.substr(eq + 1));
    data.remove_prefix(len);
  }
  return absl::OkStatus();
}

// TarSource over random-access bytes.
class BlobTarSource : public TarSource {
 public:
  explicit BlobTarSource(BlobReader& blob) : blob_(blob) {}
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    const uint64_t size = blob_.Size();
    if (offset >= size) return std::string();
    return blob_.ReadAt(offset, std::min(length, size - offset));
  }
  absl::StatusOr<uint64_t> Available(uint64_t end) override { return std::min(blob_.Size(), end); }

 private:
  BlobReader& blob_;
};

}  // namespace

absl::StatusOr<TarIndex> ScanTar(BlobReader& tar, const ScanOptions& options) {
  BlobTarSource source(tar);
  auto index = ScanTarStream(source, options);
  if (index.ok()) index->stream_size = tar.Size();
  return index;
}

absl::StatusOr<TarIndex> ScanTarStream(TarSource& tar, const ScanOptions& options) {
  TarIndex index;
  uint64_t pos = 0;
  // Extension state for the next real entry.
  std::map<std::string, std::string> pax;
  std::optional<std::string> long_name, long_link;
  uint64_t header_start = 0;
  bool in_extension = false;

  while (true) {
    auto block_or = tar.Read(pos, kBlockSize);
    if (!block_or.ok()) return block_or.status();
    const std::string& block = *block_or;
    if (block.size() < kBlockSize) {
      const uint64_t size = pos + block.size();
      if (in_extension) {
        return absl::DataLossError(
            fmt::format("tar stream ends at {} after an extension header", size));
      }
      if (pos != size) {
        return absl::DataLossError(
            fmt::format("tar stream of {} bytes ends inside a header block at {}", size, pos));
      }
      index.trailer_offset = size;
      index.stream_size = size;
      return index;
    }
    if (IsZeroBlock(block)) {
      if (in_extension) {
        return absl::DataLossError(
            fmt::format("tar end marker at {} right after an extension header", pos));
      }
      index.trailer_offset = pos;
      index.stream_size = pos;
      return index;
    }
    if (auto st = VerifyChecksum(block, pos); !st.ok()) return st;
    if (!in_extension) header_start = pos;
    const char flag = block[kTypeOff];
    auto raw_size = ParseNumeric(block, kSizeOff, 12, "size", pos);
    if (!raw_size.ok()) return raw_size.status();
    if (*raw_size < 0) {
      return absl::DataLossError(fmt::format("tar header at {}: negative size", pos));
    }
    const uint64_t field_size = static_cast<uint64_t>(*raw_size);
    const uint64_t data_off = pos + kBlockSize;

    if (flag == 'x' || flag == 'L' || flag == 'K') {
      if (field_size > options.max_extension_size) {
        return absl::ResourceExhaustedError(
            fmt::format("tar extension header at {} has {} bytes (limit {})", pos, field_size,
                        options.max_extension_size));
      }
      auto data = tar.Read(data_off, field_size);
      if (!data.ok()) return data.status();
      if (data->size() != field_size) {
        return absl::DataLossError(fmt::format("tar extension header at {} is truncated", pos));
      }
      if (flag == 'x') {
        if (auto st = ParsePaxRecords(*data, pos, pax); !st.ok()) return st;
      } else {
        std::string value = data->substr(0, data->find('\0'));
        (flag == 'L' ? long_name : long_link) = std::move(value);
      }
      in_extension = true;
      pos = data_off + PadToBlock(field_size);
      continue;
    }

    TarEntry e;
    e.header_offset = header_start;
    e.payload_offset = data_off;
    const std::string magic = block.substr(kMagicOff, 8);
    const bool gnu = magic == std::string("ustar  \0", 8);
    const bool ustar = magic.compare(0, 6, std::string("ustar\0", 6)) == 0;
    std::string name = CString(block, kNameOff, kNameLen);
    if (ustar) {
      std::string prefix = CString(block, kPrefixOff, kPrefixLen);
      if (!prefix.empty()) name = std::move(prefix.append("/").append(name));
    }
    e.name = long_name ? *long_name : name;
    e.linkname = long_link ? *long_link : CString(block, kLinkOff, kLinkLen);
    struct NumField {
      int64_t* dst;
      size_t off, len;
      const char* what;
    };
    int64_t mtime = 0;
    for (const NumField& f :
         {NumField{&e.mode, kModeOff, 8, "mode"}, NumField{&e.uid, kUidOff, 8, "uid"},
          NumField{&e.gid, kGidOff, 8, "gid"}, NumField{&mtime, kMtimeOff, 12, "mtime"}}) {
      auto v = ParseNumeric(block, f.off, f.len, f.what, pos);
      if (!v.ok()) return v.status();
      *f.dst = *v;
    }
    e.mtime.sec = mtime;
    if (ustar || gnu) {
      e.uname = CString(block, kUnameOff, 32);
      e.gname = CString(block, kGnameOff, 32);
      for (const NumField& f : {NumField{&e.devmajor, kDevMajorOff, 8, "devmajor"},
                                NumField{&e.devminor, kDevMinorOff, 8, "devminor"}}) {
        auto v = ParseNumeric(block, f.off, f.len, f.what, pos);
        if (!v.ok()) return v.status();
        *f.dst = *v;
      }
    }
    if (gnu) {
      auto a = ParseNumeric(block, kGnuAtimeOff, 12, "atime", pos);
      auto c = ParseNumeric(block, kGnuCtimeOff, 12, "ctime", pos);
      if (a.ok() && *a != 0) e.atime = TarTime{*a, 0};
      if (c.ok() && *c != 0) e.ctime = TarTime{*c, 0};
    }
    uint64_t entry_size = field_size;
    for (const auto& [key, value] : pax) {
      if (key == "path") {
        e.name = value;
      } else if (key == "linkpath") {
        e.linkname = value;
      } else if (key == "uname") {
        e.uname = value;
      } else if (key == "gname") {
        e.gname = value;
      } else if (key == "uid" || key == "gid" || key == "size") {
        int64_t v = 0;
        if (!absl::SimpleAtoi(value, &v) || v < 0) {
          return absl::InvalidArgumentError(
              fmt::format("tar PAX header at {}: bad {} {}", header_start, key, value));
        }
        if (key == "uid") e.uid = v;
        if (key == "gid") e.gid = v;
        if (key == "size") entry_size = static_cast<uint64_t>(v);
      } else if (key == "mtime" || key == "atime" || key == "ctime") {
        auto t = ParsePaxTime(value, header_start);
        if (!t.ok()) return t.status();
        if (key == "mtime") e.mtime = *t;
        if (key == "atime") e.atime = *t;
        if (key == "ctime") e.ctime = *t;
      } else if (absl::StartsWith(key, "SCHILY.xattr.")) {
        // An empty PAX value deletes the keyword (POSIX pax), as umoci reads it. containerd
        // 1.6's unpacker instead sets such an xattr with an empty value; rpull_e2e_test's gzip
        // case pins that one difference.
        if (value.empty()) {
          e.xattrs.erase(key.substr(strlen("SCHILY.xattr.")));
        } else {
          e.xattrs[key.substr(strlen("SCHILY.xattr."))] = value;
        }
      } else if (absl::StartsWith(key, "GNU.sparse.")) {
        return absl::UnimplementedError(
            fmt::format("tar entry {} at {} is a PAX sparse file, which is not supported", e.name,
                        header_start));
      }
    }

    bool header_only = false;
    switch (flag) {
      case '0':
      case '7':
        e.type = EntryType::kRegular;
        break;
      case '\0':
        e.type = absl::EndsWith(e.name, "/") ? EntryType::kDirectory : EntryType::kRegular;
        header_only = e.type == EntryType::kDirectory;
        break;
      case '1':
        e.type = EntryType::kHardlink;
        header_only = true;
        break;
      case '2':
        e.type = EntryType::kSymlink;
        header_only = true;
        break;
      case '3':
        e.type = EntryType::kCharDevice;
        header_only = true;
        break;
      case '4':
        e.type = EntryType::kBlockDevice;
        header_only = true;
        break;
      case '5':
        e.type = EntryType::kDirectory;
        header_only = true;
        break;
      case '6':
        e.type = EntryType::kFifo;
        header_only = true;
        break;
      case 'g':
        e.type = EntryType::kGlobalHeader;
        break;
      case 'S':
        return absl::UnimplementedError(fmt::format(
            "tar entry {} at {} is a GNU sparse file, which is not supported", e.name, pos));
      default:
        return absl::UnimplementedError(
            fmt::format("tar entry {} at {} has unsupported type flag 0x{:02x}", e.name, pos,
                        static_cast<unsigned char>(flag)));
    }
    if (e.type == EntryType::kGlobalHeader) entry_size = field_size;
    e.payload_size = header_only ? 0 : entry_size;
    // The last entry's padding may be missing in a truncated stream: only the payload itself
    // must be present.
    if (e.payload_size > UINT64_MAX - kBlockSize - data_off) {
      return absl::DataLossError(fmt::format("tar entry {} at {}: payload of {} bytes overflows",
                                             e.name, pos, e.payload_size));
    }
    const uint64_t payload_end = data_off + e.payload_size;
    tar.OnPayload(data_off, e.payload_size);
    auto present = tar.Available(payload_end);
    if (!present.ok()) return present.status();
    if (*present != payload_end) {
      return absl::DataLossError(
          fmt::format("tar entry {} at {}: payload of {} bytes runs past the stream end", e.name,
                      pos, e.payload_size));
    }
    const uint64_t next = e.end_offset();
    auto padded = tar.Available(next);
    if (!padded.ok()) return padded.status();
    if (*padded != next) {
      // The stream ends inside this entry's padding: that is its end.
      index.entries.push_back(std::move(e));
      index.trailer_offset = *padded;
      index.stream_size = *padded;
      return index;
    }
    pos = next;
    index.entries.push_back(std::move(e));
    pax.clear();
    long_name.reset();
    long_link.reset();
    in_extension = false;
  }
}

}  // namespace lazypull::tar
