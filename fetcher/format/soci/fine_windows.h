// SpanWindows: where a SOCI span decoder gets the 32 KiB window of a checkpoint when the zTOC
// does not hold it (a fine index, fine_index.h). FineWindows reads them from the windows blob
// by range on demand: each window is decompressed and checked against its sha256 from the
// (verified) fine blob BEFORE it is handed out, so an inflate never starts from an unverified
// dictionary.
//
// Fetching: Warm() fetches exactly the windows of the spans a layer fetch is about to move
// (but for a span whose predecessor is fetched with it: its window is the predecessor's
// output, see Offer), in the background and in one multi-range request, so they overlap the
// spans' own transfer. A miss without a warm fetches the window on its own. Recent
// windows stay in a small LRU; concurrent requests for one window share one fetch (single
// flight). A failed fetch is not remembered: the next request tries again.
//
// Thread-safe. The BlobReader must be thread-safe (every one of lazypull's is).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_FINE_WINDOWS_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_FINE_WINDOWS_H_

#include <cstddef>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/fine_index.h"
#include "lazypull/blob_reader.h"

namespace lazypull::soci {

class SpanWindows {
 public:
  virtual ~SpanWindows() = default;
  // The verified window of checkpoint `i`. Errors: DataLoss when the stored window does not
  // decompress or match its sha256; the reader's errors (e.g. Unavailable) with context;
  // InvalidArgument for `i` out of range. Blocking.
  virtual absl::StatusOr<std::shared_ptr<const std::string>> Window(size_t i) const = 0;
  // Hint that the spans of these checkpoints are being fetched: may start fetching their
  // windows (only these). Never blocks on the network.
  virtual void Warm(const std::vector<size_t>& checkpoints) const = 0;
  // The window of checkpoint `i` as derived from the inflated span before it (its last 32 KiB
  // of output, behind the window it was inflated from): kept when it matches the window's
  // sha256, so a run of spans needs only its first window fetched. Never blocks.
  virtual void Offer(size_t i, std::string window) const = 0;
};

class FineWindows : public SpanWindows {
 public:
  // Windows following a miss fetched with it. 1: Offer() derives a span's successor window.
  static constexpr size_t kReadaheadWindows = 1;
  static constexpr size_t kCachedWindows = 128;  // 4 MiB
  // Behind that LRU, every window it drops stays zstd-compressed (~12-16 KiB each) up to
  // this many bytes, oldest dropped first. A span fetched ahead is inflated on
  // arrival (deriving its successor's window) but again only when a program touches it,
  // maybe much later and in any order: without this, each such touch waited for a round trip
  // to the windows blob (node's start: ~145 of them, 62 ms each).
  static constexpr size_t kCompressedWindowBytes = 16u << 20;

  // `blob` is the windows blob; `table` comes from the verified fine blob and was checked to
  // lie inside blob->Size(). The destructor waits for background fetches Warm started.
  FineWindows(std::shared_ptr<BlobReader> blob, std::vector<FineWindow> table);
  ~FineWindows() override;
  FineWindows(const FineWindows&) = delete;
  FineWindows& operator=(const FineWindows&) = delete;

  absl::StatusOr<std::shared_ptr<const std::string>> Window(size_t i) const override;
  void Warm(const std::vector<size_t>& checkpoints) const override;
  void Offer(size_t i, std::string window) const override;

  // Windows fetched from the blob so far (for tests and status).
  size_t fetched() const;

 private:
  using Result = absl::StatusOr<std::shared_ptr<const std::string>>;
  // Claims window `i` (neither cached nor claimed) for this thread to fetch. Requires mu_.
  void Claim(size_t i) const;
  // Claims window `i` and its uncached, unclaimed followers that lie next to it in the blob;
  // returns the first index past the claimed run. Requires mu_; `i` must be unclaimed.
  size_t ClaimRun(size_t i) const;
  // Fetches the claimed windows (ascending) in one request and publishes each.
  void Fetch(const std::vector<size_t>& claimed) const;
  void Publish(size_t i, Result r) const;
  // Puts verified window `i` at the front of the LRU; a window the LRU drops keeps a
  // compressed copy (KeepCompressedLocked), so only evictions pay for compression. Requires mu_.
  void CacheLocked(size_t i, std::shared_ptr<const std::string> window) const;
  // Keeps a compressed copy of verified window `i` (bounded by kCompressedWindowBytes).
  // Requires mu_.
  void KeepCompressedLocked(size_t i, const std::string& window) const;

  const std::shared_ptr<BlobReader> blob_;
  const std::vector<FineWindow> table_;

  mutable std::mutex mu_;
  mutable std::map<size_t, std::shared_ptr<const std::string>> cached_;
  mutable std::list<size_t> lru_;  // front = most recent
  // Verified windows the LRU dropped, zstd-compressed, and their insertion order (front =
  // oldest).
  mutable std::map<size_t, std::string> compressed_;
  mutable std::list<size_t> compressed_order_;
  mutable size_t compressed_bytes_ = 0;
  mutable std::map<size_t, std::pair<std::promise<Result>, std::shared_future<Result>>> flights_;
  mutable std::vector<std::future<void>> warmers_;  // background fetches; joined on destruction
  mutable size_t fetched_ = 0;
};

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_FINE_WINDOWS_H_
