#include "fetcher/convert/toc_util.h"

#include "absl/time/time.h"
#include "fmt/format.h"

namespace lazypull::convert {

std::string FormatRfc3339Seconds(const tar::TarTime& t) {
  int64_t sec = t.sec + (t.nsec >= 500000000 ? 1 : 0);
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", absl::FromUnixSeconds(sec), absl::UTCTimeZone());
}

std::string FormatRfc3339Nano(const tar::TarTime& t) {
  absl::Time at = absl::FromUnixSeconds(t.sec) + absl::Nanoseconds(t.nsec);
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", at, absl::UTCTimeZone());
}

absl::Status CheckUtf8(std::string_view s, std::string_view what) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n != 0 && i + n <= s.size();
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; ok && k < n; ++k) {
      unsigned char cc = s[i + k];
      ok = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Reject overlong forms, surrogates and code points past U+10FFFF.
    if (ok && ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
               (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)) {
      ok = false;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          fmt::format("{} is not valid UTF-8 (byte {}); a TOC cannot name it: {}", what, i, s));
    }
    i += n;
  }
  return absl::OkStatus();
}

std::string TocType(tar::EntryType type) {
  switch (type) {
    case tar::EntryType::kRegular:
      return "reg";
    case tar::EntryType::kHardlink:
      return "hardlink";
    case tar::EntryType::kSymlink:
      return "symlink";
    case tar::EntryType::kCharDevice:
      return "char";
    case tar::EntryType::kBlockDevice:
      return "block";
    case tar::EntryType::kDirectory:
      return "dir";
    case tar::EntryType::kFifo:
      return "fifo";
    case tar::EntryType::kGlobalHeader:
      return "";
  }
  return "";
}

}  // namespace lazypull::convert
