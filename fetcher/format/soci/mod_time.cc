#include "fetcher/format/soci/mod_time.h"

#include "absl/time/time.h"

namespace lazypull::soci {

std::optional<ModTime> ParseModTime(std::string_view text) {
  if (text.empty()) return std::nullopt;
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) return std::nullopt;
  const absl::Duration since = t - absl::UnixEpoch();
  const int64_t sec = absl::ToInt64Seconds(absl::Floor(since, absl::Seconds(1)));
  const absl::Duration rest = since - absl::Seconds(sec);
  return ModTime{sec, static_cast<uint32_t>(absl::ToInt64Nanoseconds(rest))};
}

std::string FormatModTime(const ModTime& t) {
  const absl::Time at = absl::FromUnixSeconds(t.sec) + absl::Nanoseconds(t.nsec);
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", at, absl::UTCTimeZone());
}

}  // namespace lazypull::soci
