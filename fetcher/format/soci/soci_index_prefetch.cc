#include "fetcher/format/soci/soci_index_prefetch.h"

#include <chrono>
#include <system_error>
#include <utility>

#include "base/logging.h"
#include "fetcher/format/soci/soci_index.h"

namespace lazypull::soci {

SociIndexPrefetch::~SociIndexPrefetch() {
  std::map<std::string, std::shared_future<Result>> fetches;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fetches.swap(fetches_);
  }
  for (auto& [key, f] : fetches) f.wait();
}

size_t SociIndexPrefetch::started() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_;
}

void SociIndexPrefetch::Start(registry::RegistryClient& client, const registry::Reference& image,
                              const oci::Descriptor& entry) {
  auto it = entry.annotations.find(std::string(kAnnotationIndexDigest));
  if (it == entry.annotations.end()) return;
  absl::StatusOr<Digest> digest = Digest::Parse(it->second);
  if (!digest.ok()) return;  // the manifest's own annotation decides (and reports it)
  registry::Reference ref = image;
  ref.tag.clear();
  ref.digest = *digest;
  const std::string key = ref.ToString();
  std::lock_guard<std::mutex> lock(mu_);
  if (fetches_.count(key) > 0) return;
  if (fetches_.size() >= kMaxPrefetches) {
    // Never taken (their discovery answer was cached, or no layer needed one): drop the
    // finished ones; a running one would block here, so it stays.
    for (auto f = fetches_.begin(); f != fetches_.end();) {
      if (f->second.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        f = fetches_.erase(f);
      } else {
        ++f;
      }
    }
    if (fetches_.size() >= kMaxPrefetches) return;
  }
  try {
    fetches_.emplace(key, std::async(std::launch::async, [&client, ref] {
                            return client.FetchManifest(ref);
                          }).share());
    ++started_;
  } catch (const std::system_error& e) {
    LogDebug("no SOCI index prefetch: no thread",
             {{"index", digest->ToString()}, {"error", e.what()}});
  }
}

absl::StatusOr<registry::FetchedManifest> SociIndexPrefetch::Fetch(registry::RegistryClient& client,
                                                                   const registry::Reference& ref) {
  std::shared_future<Result> prefetched;
  if (!ref.digest.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    registry::Reference key = ref;
    key.tag.clear();
    auto it = fetches_.find(key.ToString());
    if (it != fetches_.end()) {
      prefetched = std::move(it->second);
      fetches_.erase(it);
    }
  }
  if (prefetched.valid()) {
    const Result& r = prefetched.get();
    // FetchManifest verified it against ref.digest: the prefetch asked for that digest.
    if (r.ok() && r->descriptor.digest == ref.digest) return *r;
  }
  return client.FetchManifest(ref);
}

}  // namespace lazypull::soci
