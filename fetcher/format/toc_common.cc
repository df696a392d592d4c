#include "fetcher/format/toc_common.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/time/time.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/status_util.h"
#include "fmt/format.h"
#include "lazypull/digest.h"

namespace lazypull::format {
namespace {

absl::Status EntryError(const TocEntry& e, std::string_view what) {
  return absl::InvalidArgumentError(
      fmt::format("TOC entry \"{}\": {}", std::string_view(e.name).substr(0, 512), what));
}

int Digits(std::string_view s, size_t at, size_t n) {
  int v = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// The form every TOC writer emits, "YYYY-MM-DDTHH:MM:SS[.F{1,9}]Z", with every field in its
// plain range. Anything else (offsets, leap seconds, long fractions, errors) returns false
// and goes to absl::ParseTime, which decides.
bool FastRfc3339(std::string_view t, int64_t* sec, uint32_t* nsec) {
  if (t.size() < 20 || t.size() > 30 || t[4] != '-' || t[7] != '-' || t[10] != 'T' ||
      t[13] != ':' || t[16] != ':' || t.back() != 'Z') {
    return false;
  }
  const int year = Digits(t, 0, 4), month = Digits(t, 5, 2), day = Digits(t, 8, 2);
  const int hour = Digits(t, 11, 2), minute = Digits(t, 14, 2), second = Digits(t, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 ||
      minute > 59 || second < 0 || second > 59) {
    return false;
  }
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day > kDays[month - 1] + (month == 2 && leap ? 1 : 0)) return false;
  uint32_t frac = 0;
  if (t.size() > 20) {
    const size_t digits = t.size() - 21;
    if (t[19] != '.' || digits == 0 || digits > 9) return false;
    const int f = Digits(t, 20, digits);
    if (f < 0) return false;
    frac = static_cast<uint32_t>(f);
    for (size_t i = digits; i < 9; ++i) frac *= 10;
  }
  *sec = DaysFromCivil(year, month, day) * 86400 + int64_t{hour} * 3600 + int64_t{minute} * 60 +
         second;
  *nsec = frac;
  return true;
}

}  // namespace

absl::Status ParseRfc3339(std::string_view text, int64_t* sec, uint32_t* nsec) {
  *sec = 0;
  *nsec = 0;
  if (text.empty()) return absl::OkStatus();
  if (FastRfc3339(text, sec, nsec)) return absl::OkStatus();
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) {
    return absl::InvalidArgumentError(
        fmt::format("bad RFC 3339 time \"{}\": {}", text.substr(0, 64), err));
  }
  absl::Duration since = t - absl::UnixEpoch();
  int64_t s = absl::ToInt64Seconds(since);
  absl::Duration rem = since - absl::Seconds(s);
  if (rem < absl::ZeroDuration()) {
    s -= 1;
    rem += absl::Seconds(1);
  }
  *sec = s;
  *nsec = static_cast<uint32_t>(absl::ToInt64Nanoseconds(rem));
  return absl::OkStatus();
}

absl::Status ParseSha256(std::string_view text, std::string_view what,
                         std::array<uint8_t, 32>* out) {
  // Fast path (no allocation): "sha256:" + 64 lowercase hex digits, as Digest::Parse wants.
  constexpr std::string_view kPrefix = "sha256:";
  if (text.size() == kPrefix.size() + 64 && text.starts_with(kPrefix)) {
    auto nibble = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    bool ok = true;
    for (size_t i = 0; i < 32 && ok; ++i) {
      const int hi = nibble(text[kPrefix.size() + 2 * i]);
      const int lo = nibble(text[kPrefix.size() + 2 * i + 1]);
      ok = hi >= 0 && lo >= 0;
      (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (ok) return absl::OkStatus();
  }
  absl::StatusOr<Digest> d = Digest::Parse(text);
  if (!d.ok()) return absl::InvalidArgumentError(fmt::format("{}: {}", what, Msg(d.status())));
  const std::string raw = d->Raw();
  std::copy(raw.begin(), raw.end(), out->begin());
  return absl::OkStatus();
}

absl::StatusOr<EntryMeta> MetaFromEntry(const TocEntry& e) {
  EntryMeta m;
  m.permissions = static_cast<uint32_t>(e.mode & 07777);
  if (e.uid > UINT32_MAX || e.gid > UINT32_MAX) return EntryError(e, "uid/gid out of range");
  m.uid = static_cast<uint32_t>(e.uid);
  m.gid = static_cast<uint32_t>(e.gid);
  if (auto st = ParseRfc3339(e.modtime, &m.mtime_sec, &m.mtime_nsec); !st.ok()) {
    return EntryError(e, Msg(st));
  }
  m.xattrs.reserve(e.xattrs.size());
  for (const auto& [name, b64] : e.xattrs) {
    std::string value;
    if (!absl::Base64Unescape(b64, &value)) {
      return EntryError(e, fmt::format("xattr \"{}\" value is not base64", name));
    }
    m.xattrs.emplace_back(name, std::move(value));
  }
  return m;
}

std::string_view Landmark(std::string_view name) {
  // Cheap pre-check: this runs for every entry.
  if (name.find(".landmark") == std::string_view::npos) return {};
  auto parts = LayerIndexBuilder::SplitPath(name);
  if (!parts.ok() || parts->size() != 1) return {};
  if ((*parts)[0] == kPrefetchLandmark) return kPrefetchLandmark;
  if ((*parts)[0] == kNoPrefetchLandmark) return kNoPrefetchLandmark;
  return {};
}

absl::Status AddNonRegular(LayerIndexBuilder& builder, const TocEntry& e, const EntryMeta& meta) {
  const std::string_view t = e.type;
  if (t == "dir") return builder.AddDirectory(e.name, meta);
  if (t == "symlink") return builder.AddSymlink(e.name, meta, e.link_name);
  if (t == "hardlink") {
    if (e.link_name.empty()) return EntryError(e, "hardlink without linkName");
    return builder.AddHardlink(e.name, e.link_name);
  }
  if (t == "char" || t == "block") {
    if (e.dev_major > UINT32_MAX || e.dev_minor > UINT32_MAX) {
      return EntryError(e, "device number out of range");
    }
    return builder.AddDevice(e.name, meta, t == "char" ? S_IFCHR : S_IFBLK,
                             static_cast<uint32_t>(e.dev_major),
                             static_cast<uint32_t>(e.dev_minor));
  }
  if (t == "fifo") return builder.AddFifo(e.name, meta);
  return EntryError(e, fmt::format("unknown entry type \"{}\"", t.substr(0, 32)));
}

}  // namespace lazypull::format
