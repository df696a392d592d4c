#include "server/remote/soci_discovery.h"

#include <optional>

#include "fetcher/format/soci/soci_index_finder.h"

namespace lazypull::remote {

SociDiscovery NewSociDiscovery(bool v1) {
  return [v1](registry::RegistryClient& client, const registry::Reference& ref,
              const Digest& manifest_digest) -> absl::StatusOr<std::map<Digest, oci::Descriptor>> {
    absl::StatusOr<std::optional<soci::FoundSociIndex>> found =
        soci::FindSociIndex(client, ref, manifest_digest, {.v1 = v1});
    if (!found.ok()) return found.status();
    std::map<Digest, oci::Descriptor> out;
    if (!found->has_value()) return out;
    for (const soci::ZtocRef& z : (*found)->index.ztocs) out.emplace(z.layer_digest, z.ztoc);
    return out;
  };
}

}  // namespace lazypull::remote
