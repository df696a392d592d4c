// SociDiscovery: the one question the remote layer manager asks about SOCI indexes — which
// zTOC belongs to which layer of an image — so the discovery itself (SOCI-enabled image
// indexes for v2, the referrers API or its tag schema for v1) lives with the SOCI index code
// and the manager stays a consumer of its answer.
#ifndef LAZYPULL_SERVER_REMOTE_SOCI_DISCOVERY_H_
#define LAZYPULL_SERVER_REMOTE_SOCI_DISCOVERY_H_

#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "lazypull/digest.h"

namespace lazypull::remote {

// Thread-safe. The client passed to its methods must outlive the object (a prefetch may still
// run until it is destroyed).
class SociDiscovery {
 public:
  virtual ~SociDiscovery() = default;

  // While `ref` is resolved: `entry` is the image index's descriptor of the image manifest
  // about to be fetched (RegistryClient::Resolve's on_index_entry). May start fetching the
  // SOCI index that entry names, so Find needs no round trip of its own. Never blocks.
  virtual void SawIndexEntry(registry::RegistryClient& client, const registry::Reference& ref,
                             const oci::Descriptor& entry) = 0;

  // For the image `ref` whose platform manifest is `manifest` (verified by the caller against
  // `manifest_digest`): the zTOC descriptor of each layer that has one, by layer digest
  // (layers below the index creator's minimum size have none). An empty map when the image
  // has no SOCI index. Errors are the registry's, or InvalidArgument/DataLoss for an index
  // that does not parse or verify.
  virtual absl::StatusOr<std::map<Digest, oci::Descriptor>> Find(registry::RegistryClient& client,
                                                                 const registry::Reference& ref,
                                                                 const Digest& manifest_digest,
                                                                 const oci::Manifest& manifest) = 0;
};

// FindSociIndexOfManifest (fetcher/format/soci/soci_index_finder.h): v2 SOCI-enabled images
// (their index prefetched from the image index's entry: soci_index_prefetch.h), and v1
// indexes through referrers when `v1` (the daemon's `[soci] v1`).
std::unique_ptr<SociDiscovery> NewSociDiscovery(bool v1);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_SOCI_DISCOVERY_H_
