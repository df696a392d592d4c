#include "fetcher/format/soci/fine_windows.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "base/logging.h"
#include "fetcher/codec/zstd.h"
#include "fmt/format.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

FineWindows::FineWindows(std::shared_ptr<BlobReader> blob, std::vector<FineWindow> table)
    : blob_(std::move(blob)), table_(std::move(table)) {}

FineWindows::~FineWindows() {
  std::vector<std::future<void>> warmers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    warmers.swap(warmers_);
  }
  for (std::future<void>& f : warmers) f.wait();
}

size_t FineWindows::fetched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fetched_;
}

void FineWindows::Claim(size_t i) const {
  std::promise<Result> p;
  std::shared_future<Result> f = p.get_future().share();
  flights_.emplace(i, std::make_pair(std::move(p), std::move(f)));
}

size_t FineWindows::ClaimRun(size_t i) const {
  size_t end = i;
  while (end < table_.size() && end - i < kReadaheadWindows && !cached_.count(end) &&
         !flights_.count(end)) {
    // Only a contiguous run of the blob is one range.
    if (end > i && table_[end].offset != table_[end - 1].offset + table_[end - 1].length) break;
    Claim(end);
    ++end;
  }
  return end;
}

void FineWindows::KeepCompressedLocked(size_t i, const std::string& window) const {
  if (compressed_.count(i)) return;
  // Level 1: ~0.1 ms per window, and the copy only has to be smaller than the window.
  absl::StatusOr<std::string> z = codec::ZstdCompress(window, 1);
  if (!z.ok()) return;
  compressed_bytes_ += z->size();
  compressed_.emplace(i, *std::move(z));
  compressed_order_.push_back(i);
  while (compressed_bytes_ > kCompressedWindowBytes && !compressed_order_.empty()) {
    auto it = compressed_.find(compressed_order_.front());
    compressed_bytes_ -= it->second.size();
    compressed_.erase(it);
    compressed_order_.pop_front();
  }
}

void FineWindows::CacheLocked(size_t i, std::shared_ptr<const std::string> window) const {
  cached_[i] = std::move(window);
  lru_.remove(i);
  lru_.push_front(i);
  while (lru_.size() > kCachedWindows) {
    auto it = cached_.find(lru_.back());
    KeepCompressedLocked(it->first, *it->second);
    cached_.erase(it);
    lru_.pop_back();
  }
}

void FineWindows::Publish(size_t i, Result r) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (r.ok()) CacheLocked(i, *r);
  auto it = flights_.find(i);
  if (it != flights_.end()) {
    it->second.first.set_value(std::move(r));
    flights_.erase(it);
  }
}

void FineWindows::Fetch(const std::vector<size_t>& claimed) const {
  // One range per run of windows adjacent in the blob.
  std::vector<ByteRange> ranges;
  for (size_t i : claimed) {
    const FineWindow& w = table_[i];
    if (!ranges.empty() && ranges.back().end() == w.offset) {
      ranges.back().length += w.length;
    } else {
      ranges.push_back({w.offset, w.length});
    }
  }
  std::vector<std::string> got(ranges.size());
  for (size_t r = 0; r < ranges.size(); ++r) got[r].resize(ranges[r].length);
  const auto start = std::chrono::steady_clock::now();
  // Ranges arrive in order within a range; different ranges write different buffers.
  absl::Status st =
      blob_->StreamRanges(ranges, [&](uint64_t offset, std::string_view data) -> absl::Status {
        auto it = std::upper_bound(ranges.begin(), ranges.end(), offset,
                                   [](uint64_t off, const ByteRange& r) { return off < r.offset; });
        if (it == ranges.begin()) return absl::DataLossError("bytes outside the asked ranges");
        const size_t r = static_cast<size_t>(it - ranges.begin()) - 1;
        if (offset + data.size() > ranges[r].end()) {
          return absl::DataLossError("bytes outside the asked ranges");
        }
        std::memcpy(got[r].data() + (offset - ranges[r].offset), data.data(), data.size());
        return absl::OkStatus();
      });
  uint64_t total = 0;
  for (const ByteRange& r : ranges) total += r.length;
  if (GetLogLevel() == LogLevel::kDebug) {
    LogDebug(
        "fine index windows fetch",
        {{"first", claimed.front()},
         {"windows", claimed.size()},
         {"ranges", ranges.size()},
         {"bytes", total},
         {"ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count()},
         {"ok", st.ok()}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fetched_ += claimed.size();
  }
  size_t r = 0;
  for (size_t i : claimed) {
    const FineWindow& w = table_[i];
    if (!st.ok()) {
      Publish(i, absl::Status(st.code(),
                              fmt::format("fine index window {} (windows blob [{}, "
                                          "+{})): {}",
                                          i, w.offset, w.length, std::string(st.message()))));
      continue;
    }
    while (ranges[r].end() <= w.offset) ++r;
    codec::ZstdDecompressOptions zopts;
    zopts.max_output = kWindowSize;
    absl::StatusOr<std::string> window = codec::ZstdDecompress(
        std::string_view(got[r]).substr(w.offset - ranges[r].offset, w.length), zopts);
    if (!window.ok() || window->size() != kWindowSize) {
      Publish(i, absl::DataLossError(fmt::format(
                     "fine index window {} does not decompress to {} bytes: {}", i, kWindowSize,
                     window.ok() ? fmt::format("{} bytes", window->size())
                                 : std::string(window.status().message()))));
      continue;
    }
    const std::string sha = Digest::Of(*window).Raw();
    if (sha.size() != w.sha256.size() ||
        std::memcmp(sha.data(), w.sha256.data(), sha.size()) != 0) {
      Publish(
          i, absl::DataLossError(fmt::format("fine index window {} does not match its sha256", i)));
      continue;
    }
    Publish(i, std::make_shared<const std::string>(std::move(*window)));
  }
}

absl::StatusOr<std::shared_ptr<const std::string>> FineWindows::Window(size_t i) const {
  if (i >= table_.size()) {
    return absl::InvalidArgumentError(
        fmt::format("fine index: no window {} ({} checkpoints)", i, table_.size()));
  }
  std::shared_future<Result> wait;
  size_t end = i;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = cached_.find(i); it != cached_.end()) {
      lru_.remove(i);
      lru_.push_front(i);
      return it->second;
    }
    if (auto it = compressed_.find(i); it != compressed_.end()) {
      // Verified when it was kept; memory is trusted.
      codec::ZstdDecompressOptions zopts;
      zopts.max_output = kWindowSize;
      absl::StatusOr<std::string> window = codec::ZstdDecompress(it->second, zopts);
      if (window.ok() && window->size() == kWindowSize) {
        auto shared = std::make_shared<const std::string>(*std::move(window));
        CacheLocked(i, shared);
        return shared;
      }
    }
    if (auto it = flights_.find(i); it != flights_.end()) {
      wait = it->second.second;
    } else {
      end = ClaimRun(i);
      wait = flights_.at(i).second;
    }
  }
  if (end > i) {
    std::vector<size_t> claimed;
    for (size_t k = i; k < end; ++k) claimed.push_back(k);
    Fetch(claimed);
  }
  return wait.get();
}

void FineWindows::Offer(size_t i, std::string window) const {
  if (i >= table_.size() || window.size() != kWindowSize) return;
  const std::string sha = Digest::Of(window).Raw();
  if (sha.size() != table_[i].sha256.size() ||
      std::memcmp(sha.data(), table_[i].sha256.data(), sha.size()) != 0) {
    return;  // not what the index says: let a fetch decide
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_.count(i)) return;
  }
  Publish(i, std::make_shared<const std::string>(std::move(window)));
}

void FineWindows::Warm(const std::vector<size_t>& checkpoints) const {
  std::vector<size_t> sorted = checkpoints;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<size_t> claimed;
  for (size_t n = 0; n < sorted.size(); ++n) {
    const size_t i = sorted[n];
    // The predecessor's span comes with it: its inflate offers this window.
    if (n > 0 && sorted[n - 1] + 1 == i) continue;
    if (i >= table_.size() || cached_.count(i) || flights_.count(i)) continue;
    Claim(i);
    claimed.push_back(i);
  }
  if (claimed.empty()) return;
  warmers_.erase(std::remove_if(warmers_.begin(), warmers_.end(),
                                [](const std::future<void>& f) {
                                  return f.wait_for(std::chrono::seconds(0)) ==
                                         std::future_status::ready;
                                }),
                 warmers_.end());
  try {
    warmers_.push_back(std::async(std::launch::async, [this, claimed] { Fetch(claimed); }));
  } catch (const std::system_error& e) {
    // No thread for it: release the claims (their waiters get Unavailable; the next request
    // fetches again).
    for (size_t k : claimed) {
      auto it = flights_.find(k);
      it->second.first.set_value(absl::UnavailableError(
          fmt::format("fine index window {}: no thread to fetch it: {}", k, e.what())));
      flights_.erase(it);
    }
  }
}

}  // namespace lazypull::soci
