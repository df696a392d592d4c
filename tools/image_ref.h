// Opens the image store a command-line reference names: `oci:DIR[:TAG]` is an OCI image
// layout, anything else a registry reference (HOST[:PORT]/REPO[:TAG|@DIGEST]).
#ifndef LAZYPULL_TOOLS_IMAGE_REF_H_
#define LAZYPULL_TOOLS_IMAGE_REF_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/convert/image_store.h"

namespace lazypull::tools {

// `plain_http` selects http:// for registries. `for_push` is true for destinations.
// InvalidArgument for an unparsable reference.
absl::StatusOr<std::unique_ptr<convert::ImageStore>> OpenImageRef(const std::string& ref,
                                                                  bool plain_http, bool for_push);

}  // namespace lazypull::tools

#endif  // LAZYPULL_TOOLS_IMAGE_REF_H_
