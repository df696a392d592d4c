#include "fetcher/oci/json_util.h"

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::oci::internal {

absl::StatusOr<nlohmann::json> ParseJson(std::string_view bytes, std::string_view what) {
  try {
    return nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}: invalid JSON: {}", what, e.what()));
  }
}

}  // namespace lazypull::oci::internal
