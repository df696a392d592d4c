// The zTOC's `mod_time` strings: RFC 3339 with optional fractional seconds, as Go's
// time.MarshalText writes them ("2006-01-02T15:04:05.999999999Z07:00"). Thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_MOD_TIME_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_MOD_TIME_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lazypull::soci {

struct ModTime {
  int64_t sec = 0;
  uint32_t nsec = 0;  // < 1e9
};

// Parses any RFC 3339 time ("Z" or a numeric offset); nullopt for "" or malformed text.
std::optional<ModTime> ParseModTime(std::string_view text);

// Formats in UTC with "Z" and the fraction's trailing zeros dropped, as Go does for a UTC
// time ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.5Z").
std::string FormatModTime(const ModTime& t);

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_MOD_TIME_H_
