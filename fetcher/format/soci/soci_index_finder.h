// FindSociIndex: the SOCI index of an image in a registry, from what containerd passes to a
// snapshotter (the image reference, tag or digest, and the manifest digest when the client
// sends one: CRI's cri.manifest-digest; stargz labels carry none, so the tag is resolved).
//
// Discovery, in soci-snapshotter's order:
//  - v2 ("SOCI-enabled image"): the image manifest carries `com.amazon.soci.index-digest`; the
//    SOCI index manifest is fetched by that digest (or taken from a fetch started earlier from
//    the image index's entry: SociFinderOptions::prefetch). Trust chain: the manifest is verified
//    by its digest (from containerd, or the registry's for a tag), the index by the digest the
//    manifest names, each zTOC later by the digest the index names.
//  - v1 (only with `v1`): the first referrer of the image manifest with artifactType
//    application/vnd.amazon.soci.index.v1+json, through the OCI referrers API or the
//    referrers tag schema ("sha256-<hex>") where the registry lacks the API. v1 is off by
//    default as in soci-snapshotter >= 0.10: anyone who can push to the repository can attach
//    an index to an existing image and so change how it runs.
//
// Thread-safe (RegistryClient is); blocking (registry round trips).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_FINDER_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_FINDER_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/soci_index_prefetch.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/platform.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

struct SociFinderOptions {
  // Also look for v1 indexes through referrers (the daemon's `[soci] v1`).
  bool v1 = false;
  // The platform whose manifest a tag naming an image index resolves to (default: the host's).
  std::optional<oci::Platform> platform{};
  // Per-zTOC size cap applied when parsing the index (ParseSociIndex). The index manifest
  // itself is capped at 4 MiB by RegistryClient::FetchManifest.
  uint64_t max_ztoc_size = 512ull << 20;
  // Where a v2 SOCI index manifest is looked for first: a fetch started while the image
  // manifest was still being fetched (soci_index_prefetch.h). Null: fetched when needed.
  SociIndexPrefetch* prefetch = nullptr;
};

struct FoundSociIndex {
  SociIndex index;               // per layer digest, the zTOC descriptor: index.Find(layer)->ztoc
  oci::Descriptor descriptor;    // the SOCI index manifest: its digest (verified) and size
  Digest image_manifest_digest;  // the image manifest it belongs to
};

// nullopt: the image has no SOCI index the enabled modes find (pull it another way). Errors:
//  - the registry's, e.g. NotFound when a v2 annotation names an index the registry lacks,
//    DataLoss when the index bytes do not match the digest that names them (after retries);
//  - InvalidArgument for a malformed manifest, referrers list or SOCI index, for an index of
//    the wrong version for how it was found, a v1 index whose subject is another manifest, or
//    a referrer whose size differs from the fetched index.
absl::StatusOr<std::optional<FoundSociIndex>> FindSociIndex(
    registry::RegistryClient& client, const registry::Reference& image,
    const std::optional<Digest>& manifest_digest, const SociFinderOptions& options = {});

// The same search when the caller already holds the image manifest (e.g. the daemon resolved
// it for the layer's labels): `manifest` must be the one `manifest_digest` names, verified by
// the caller. Saves the manifest round trip; errors as above.
absl::StatusOr<std::optional<FoundSociIndex>> FindSociIndexOfManifest(
    registry::RegistryClient& client, const registry::Reference& image,
    const Digest& manifest_digest, const oci::Manifest& manifest,
    const SociFinderOptions& options = {});

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_FINDER_H_
