// An ImageStore for a registry reference (HOST[:PORT]/REPO[:TAG|@DIGEST]).
#ifndef LAZYPULL_TOOLS_REGISTRY_IMAGE_STORE_H_
#define LAZYPULL_TOOLS_REGISTRY_IMAGE_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/convert/image_store.h"

namespace lazypull::tools {

// `plain_http` reaches the registry over http://. InvalidArgument for a bad reference;
// Unimplemented if lazypull was built without the registry client.
absl::StatusOr<std::unique_ptr<convert::ImageStore>> OpenRegistryImageStore(const std::string& text,
                                                                            bool plain_http);

}  // namespace lazypull::tools

#endif  // LAZYPULL_TOOLS_REGISTRY_IMAGE_STORE_H_
