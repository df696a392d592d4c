// SociIndexPrefetch: fetches a v2 SOCI index manifest while the image manifest that names it
// is still on its way, so SOCI discovery costs no round trip of its own after the manifest.
//
// A SOCI-enabled image's index lists the image manifest with the annotation
// `com.amazon.soci.index-digest` on its entry (`soci convert` and `lazypull index create` both
// write it there as well as in the manifest). Start() takes that entry (before the manifest is
// fetched) and fetches the manifest the annotation names, by digest, in the background; Fetch()
// is FetchManifest that first looks for such a fetch. Trust is unchanged: discovery still
// asks for the digest the (verified) image manifest names, and a prefetch serves only a request
// for its own digest, whose bytes RegistryClient::FetchManifest verified against that digest.
// An entry with no or a malformed annotation starts nothing (discovery decides, from the
// manifest, as without a prefetch); a prefetch that failed is not reused (Fetch asks again, so
// the answer and its status code are those of a fetch made then).
//
// Thread-safe. The client passed to Start must outlive this object (the destructor waits for
// every fetch still running).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_PREFETCH_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_PREFETCH_H_

#include <cstddef>
#include <future>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

class SociIndexPrefetch {
 public:
  // Prefetches kept at most (taken ones are forgotten; beyond this, finished ones are dropped
  // and no new one starts while all are running).
  static constexpr size_t kMaxPrefetches = 64;

  SociIndexPrefetch() = default;
  ~SociIndexPrefetch();
  SociIndexPrefetch(const SociIndexPrefetch&) = delete;
  SociIndexPrefetch& operator=(const SociIndexPrefetch&) = delete;

  // `entry`: an image index's descriptor of the image manifest about to be fetched from
  // `image`'s repository. Starts fetching the SOCI index its annotation names, unless one is
  // already kept for that digest. Never blocks on the network.
  void Start(registry::RegistryClient& client, const registry::Reference& image,
             const oci::Descriptor& entry);

  // client.FetchManifest(ref), answered by a successful prefetch of ref.digest when there is
  // one (waiting for it if it is still running; it is then forgotten).
  absl::StatusOr<registry::FetchedManifest> Fetch(registry::RegistryClient& client,
                                                  const registry::Reference& ref);

  // Prefetches started so far (for tests).
  size_t started() const;

 private:
  using Result = absl::StatusOr<registry::FetchedManifest>;

  mutable std::mutex mu_;
  // By repository and SOCI index digest ("host/repo@sha256:..."): a prefetch answers only
  // requests to the repository it asked.
  std::map<std::string, std::shared_future<Result>> fetches_;
  size_t started_ = 0;
};

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_INDEX_PREFETCH_H_
