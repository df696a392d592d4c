// Small helpers shared by the eStargz and zstd:chunked writers for the JSON TOC fields.
#ifndef LAZYPULL_FETCHER_CONVERT_TOC_UTIL_H_
#define LAZYPULL_FETCHER_CONVERT_TOC_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "fetcher/tar/tar_entry.h"

namespace lazypull::convert {

// "2006-01-02T15:04:05Z" (eStargz: whole seconds, rounded half up as Go's Time.Round).
std::string FormatRfc3339Seconds(const tar::TarTime& t);
// "2006-01-02T15:04:05.123Z" (zstd:chunked: Go's RFC3339Nano, trailing zeros dropped).
std::string FormatRfc3339Nano(const tar::TarTime& t);

// TOC JSON must be valid UTF-8 (both reference implementations would replace bad bytes with
// U+FFFD and so name a file that does not exist). InvalidArgument naming `what` otherwise.
absl::Status CheckUtf8(std::string_view text, std::string_view what);

// The TOC "type" of a tar entry ("reg", "dir", ...); "" for a PAX global header.
std::string TocType(tar::EntryType type);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_TOC_UTIL_H_
