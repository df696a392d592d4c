#include "fetcher/format/soci/fine_windows.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
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

size_t FineWindows::ClaimRun(size_t i) const {
  size_t end = i;
  while (end < table_.size() && end - i < kReadaheadWindows && !cached_.count(end) &&
         !flights_.count(end)) {
    // Only a contiguous run of the blob is one range request.
    if (end > i && table_[end].offset != table_[end - 1].offset + table_[end - 1].length) break;
    std::promise<Result> p;
    std::shared_future<Result> f = p.get_future().share();
    flights_.emplace(end, std::make_pair(std::move(p), std::move(f)));
    ++end;
  }
  return end;
}

void FineWindows::Publish(size_t i, Result r) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (r.ok()) {
    cached_[i] = *r;
    lru_.push_front(i);
    while (lru_.size() > kCachedWindows) {
      cached_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  auto it = flights_.find(i);
  if (it != flights_.end()) {
    it->second.first.set_value(std::move(r));
    flights_.erase(it);
  }
}

void FineWindows::FetchRun(size_t begin, size_t end) const {
  const uint64_t from = table_[begin].offset;
  const uint64_t to = table_[end - 1].offset + table_[end - 1].length;
  absl::StatusOr<std::string> bytes = blob_->ReadAt(from, to - from);
  if (bytes.ok() && bytes->size() != to - from) {
    bytes = absl::DataLossError(fmt::format("got {} bytes", bytes->size()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fetched_ += end - begin;
  }
  for (size_t i = begin; i < end; ++i) {
    if (!bytes.ok()) {
      Publish(i, absl::Status(bytes.status().code(),
                              fmt::format("fine index window {} (windows blob [{}, +{})): {}", i,
                                          from, to - from, std::string(bytes.status().message()))));
      continue;
    }
    const FineWindow& w = table_[i];
    codec::ZstdDecompressOptions zopts;
    zopts.max_output = kWindowSize;
    absl::StatusOr<std::string> window =
        codec::ZstdDecompress(std::string_view(*bytes).substr(w.offset - from, w.length), zopts);
    if (!window.ok() || window->size() != kWindowSize) {
      Publish(i, absl::DataLossError(fmt::format(
                     "fine index window {} does not decompress to {} bytes: {}", i, kWindowSize,
                     window.ok() ? fmt::format("{} bytes", window->size())
                                 : std::string(window.status().message()))));
      continue;
    }
    const std::string sha = Digest::Of(*window).Raw();
    if (sha.size() != w.sha256.size() || std::memcmp(sha.data(), w.sha256.data(), sha.size())) {
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
    if (auto it = flights_.find(i); it != flights_.end()) {
      wait = it->second.second;
    } else {
      end = ClaimRun(i);
      wait = flights_.at(i).second;
    }
  }
  if (end > i) FetchRun(i, end);
  return wait.get();
}

void FineWindows::Warm(size_t i) const {
  if (i >= table_.size()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (cached_.count(i) || flights_.count(i)) return;
  const size_t end = ClaimRun(i);
  warmers_.erase(std::remove_if(warmers_.begin(), warmers_.end(),
                                [](const std::future<void>& f) {
                                  return f.wait_for(std::chrono::seconds(0)) ==
                                         std::future_status::ready;
                                }),
                 warmers_.end());
  warmers_.push_back(std::async(std::launch::async, [this, i, end] { FetchRun(i, end); }));
}

}  // namespace lazypull::soci
