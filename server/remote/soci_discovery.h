// SociDiscovery: the one question the remote layer manager asks about SOCI indexes — which
// zTOC belongs to which layer of an image — so the discovery itself (SOCI-enabled image
// indexes for v2, the referrers API or its tag schema for v1) lives with the SOCI index code
// and the manager stays a consumer of its answer.
#ifndef LAZYPULL_SERVER_REMOTE_SOCI_DISCOVERY_H_
#define LAZYPULL_SERVER_REMOTE_SOCI_DISCOVERY_H_

#include <functional>
#include <map>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "lazypull/digest.h"

namespace lazypull::remote {

// For the image `ref` whose platform manifest is `manifest_digest`: the zTOC descriptor of
// each layer that has one, by layer digest (layers below the index creator's minimum size have
// none). An empty map when the image has no SOCI index. Errors are the registry's, or
// InvalidArgument/DataLoss for an index that does not parse or verify. Must be thread-safe.
using SociDiscovery = std::function<absl::StatusOr<std::map<Digest, oci::Descriptor>>(
    registry::RegistryClient& client, const registry::Reference& ref,
    const Digest& manifest_digest)>;

// FindSociIndex (fetcher/format/soci/soci_index_finder.h): v2 SOCI-enabled images, and v1
// indexes through referrers when `v1` (the daemon's `[soci] v1`).
SociDiscovery NewSociDiscovery(bool v1);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_SOCI_DISCOVERY_H_
