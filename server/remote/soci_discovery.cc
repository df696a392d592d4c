#include "server/remote/soci_discovery.h"

#include <optional>

#include "fetcher/format/soci/soci_index_finder.h"
#include "fetcher/format/soci/soci_index_prefetch.h"

namespace lazypull::remote {
namespace {

class RegistrySociDiscovery final : public SociDiscovery {
 public:
  explicit RegistrySociDiscovery(bool v1) : v1_(v1) {}

  void SawIndexEntry(registry::RegistryClient& client, const registry::Reference& ref,
                     const oci::Descriptor& entry) override {
    prefetch_.Start(client, ref, entry);
  }

  absl::StatusOr<std::map<Digest, oci::Descriptor>> Find(registry::RegistryClient& client,
                                                         const registry::Reference& ref,
                                                         const Digest& manifest_digest,
                                                         const oci::Manifest& manifest) override {
    absl::StatusOr<std::optional<soci::FoundSociIndex>> found = soci::FindSociIndexOfManifest(
        client, ref, manifest_digest, manifest, {.v1 = v1_, .prefetch = &prefetch_});
    if (!found.ok()) return found.status();
    std::map<Digest, oci::Descriptor> out;
    if (!found->has_value()) return out;
    for (const soci::ZtocRef& z : (*found)->index.ztocs) out.emplace(z.layer_digest, z.ztoc);
    return out;
  }

 private:
  const bool v1_;
  soci::SociIndexPrefetch prefetch_;
};

}  // namespace

std::unique_ptr<SociDiscovery> NewSociDiscovery(bool v1) {
  return std::make_unique<RegistrySociDiscovery>(v1);
}

}  // namespace lazypull::remote
