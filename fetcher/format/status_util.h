// Internal helper: Debian's absl has its own string_view type; fmt and our std::string_view
// APIs want the standard one.
#ifndef LAZYPULL_FETCHER_FORMAT_STATUS_UTIL_H_
#define LAZYPULL_FETCHER_FORMAT_STATUS_UTIL_H_

#include <string_view>

#include "absl/status/status.h"

namespace lazypull::format {

inline std::string_view Msg(const absl::Status& s) {
  return std::string_view(s.message().data(), s.message().size());
}

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_STATUS_UTIL_H_
