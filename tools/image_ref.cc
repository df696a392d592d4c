#include "tools/image_ref.h"

#include "absl/strings/match.h"
#include "fmt/format.h"
#include "tools/registry_image_store.h"

namespace lazypull::tools {

absl::StatusOr<std::unique_ptr<convert::ImageStore>> OpenImageRef(const std::string& ref,
                                                                  bool plain_http, bool for_push) {
  if (absl::StartsWith(ref, "oci:")) {
    std::string rest = ref.substr(4);
    std::string dir = rest, tag;
    // The tag follows the last ':' unless that ':' is part of the path.
    if (size_t colon = rest.rfind(':');
        colon != std::string::npos && rest.find('/', colon) == std::string::npos) {
      dir = rest.substr(0, colon);
      tag = rest.substr(colon + 1);
    }
    return convert::OpenOciLayout(dir, tag);
  }
  return OpenRegistryImageStore(ref, plain_http);
}

}  // namespace lazypull::tools
