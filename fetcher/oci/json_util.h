// Internal helpers shared by the OCI parsers (not part of the public API).
#ifndef LAZYPULL_FETCHER_OCI_JSON_UTIL_H_
#define LAZYPULL_FETCHER_OCI_JSON_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lazypull::oci::internal {

// Parses JSON without throwing; InvalidArgument names `what` and the parser's message.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view bytes, std::string_view what);

}  // namespace lazypull::oci::internal

#endif  // LAZYPULL_FETCHER_OCI_JSON_UTIL_H_
