// LayerReader's prefetch and background fetch (layer_reader.h, "Prefetch and background
// fetch"): the work that makes a layer local without a reader asking, kept apart from the
// on-demand read path in layer_reader.cc.
#include <algorithm>
#include <utility>

#include "base/logging.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fmt/format.h"

namespace lazypull {
namespace {

// Background passes over a layer whose chunks the cache keeps evicting.
constexpr int kMaxBackgroundPasses = 3;

}  // namespace

using format::Chunk;
using format::ChunkCompression;

absl::Status LayerReader::Prefetch() {
  std::optional<ByteRange> range = index_->prefetch_range();
  if (!range || range->length == 0) return absl::OkStatus();
  Group group{*range, {}};
  std::vector<std::shared_ptr<Flight>> waits;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Chunk* c : all_chunks_) {
      if (c->compression == ChunkCompression::kZeros) continue;
      if (c->compressed_offset < range->offset ||
          c->compressed_offset + c->compressed_length > range->end()) {
        continue;
      }
      bool owned = false;
      std::shared_ptr<Flight> flight = ClaimLocked(*c, &owned);
      if (!flight) continue;
      if (owned) {
        group.chunks.push_back({c, flight});
      } else {
        waits.push_back(flight);
      }
    }
  }
  for (const ChunkRef& ref : group.chunks) waits.push_back(ref.flight);
  if (!group.chunks.empty()) {
    // The prioritized files are what the container reads first: on-demand work.
    BackgroundScheduler::ForegroundActivity activity = scheduler_->BeginForeground();
    std::vector<Group> groups;
    groups.push_back(std::move(group));
    RunFetch(std::move(groups), FetchKind::kPrefetch);
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.fetch_timeout;
  for (const auto& flight : waits) {
    if (absl::Status st = WaitFlight(flight, deadline); !st.ok()) {
      return absl::Status(
          st.code(), fmt::format("layer {}: prefetch of [{}, +{}): {}", layer_id_, range->offset,
                                 range->length, std::string(st.message())));
    }
  }
  return absl::OkStatus();
}

void LayerReader::StartBackground() {
  std::lock_guard<std::mutex> lock(mu_);
  if (background_started_ || stopping_) return;
  background_started_ = true;
  background_thread_ = std::thread([this] { BackgroundMain(); });
}

bool LayerReader::WaitBackground(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return background_finished_; });
}

void LayerReader::BackgroundMain() {
  if (options_.prefetch) {
    bool has_range = index_->prefetch_range().has_value();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prefetch = has_range ? "running" : "none";
    }
    if (has_range) {
      absl::Status st = Prefetch();
      if (!st.ok()) {
        LogWarn("layer prefetch failed", {{"layer", layer_id_}, {"error", st.ToString()}});
      }
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prefetch = st.ok() ? "done" : "failed";
    }
  }
  if (options_.background_fetch && WaitSilence()) RunBackgroundFetch();
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.background_fetch && stopping_) stats_.background = "stopped";
  background_finished_ = true;
  cv_.notify_all();
}

bool LayerReader::WaitSilence() {
  std::unique_lock<std::mutex> lock(mu_);
  stats_.background = "waiting";
  for (;;) {
    if (stopping_) return false;
    const auto until = last_on_demand_ + options_.background_silence;
    if (std::chrono::steady_clock::now() >= until) return true;
    cv_.wait_until(lock, until);
  }
}

void LayerReader::RunBackgroundFetch() {
  const uint64_t errors_before = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_.fetch_errors + stats_.verify_errors;
  }();
  // When the chunk cache evicts chunks of this layer while (or after) they are fetched, the
  // layer is not local: another pass fetches them again, as long as the cache can hold the
  // layer at all (else passes would only evict each other).
  const bool fits = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_.total_bytes <= cache_->config().max_bytes / 2;
  }();
  bool complete = false;
  for (int pass = 0; pass < kMaxBackgroundPasses && BackgroundPass(); ++pass) {
    std::lock_guard<std::mutex> lock(mu_);
    complete = stats_.local_chunks == stats_.total_chunks;
    const bool failed = stats_.fetch_errors + stats_.verify_errors > errors_before;
    if (complete || failed || !fits) break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t errors = stats_.fetch_errors + stats_.verify_errors - errors_before;
  complete = stats_.local_chunks == stats_.total_chunks;
  stats_.background = stopping_    ? "stopped"
                      : complete   ? "done"
                      : errors > 0 ? "failed"
                                   : "incomplete";
  if (!stopping_) {
    nlohmann::json fields = {{"layer", layer_id_},
                             {"errors", errors},
                             {"fetched_percent", stats_.fetched_percent()},
                             {"bytes_fetched", stats_.bytes_fetched},
                             {"background_bytes", stats_.background_bytes}};
    if (complete) {
      LogInfo("layer fully local", fields);
    } else if (errors > 0) {
      LogWarn("background fetch left chunks missing", fields);
    } else {
      fields["cache_max_bytes"] = cache_->config().max_bytes;
      LogWarn("layer does not stay local: the chunk cache evicts its chunks", fields);
    }
  }
}

bool LayerReader::BackgroundPass() {
  auto set_state = [this](BackgroundScheduler::WaitReason reason) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.background = std::string(BackgroundScheduler::WaitReasonName(reason));
  };
  size_t i = 0;
  while (i < all_chunks_.size()) {
    if (!WaitBulkReady()) break;
    // The permit comes first: claiming chunks and then waiting would make on-demand reads of
    // them wait for the very pause they cause.
    std::optional<BackgroundScheduler::Permit> permit =
        scheduler_->Acquire([this] { return stopping_.load(); }, set_state);
    if (!permit) break;
    std::vector<ChunkRef> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      uint64_t batch_begin = 0;
      for (; i < all_chunks_.size(); ++i) {
        const Chunk* c = all_chunks_[i];
        if (c->compression == ChunkCompression::kZeros) continue;
        if (!batch.empty() && c->compressed_offset + c->compressed_length - batch_begin >
                                  options_.background_request_bytes) {
          break;
        }
        bool owned = false;
        std::shared_ptr<Flight> flight = ClaimLocked(*c, &owned);
        if (!owned) continue;
        if (batch.empty()) batch_begin = c->compressed_offset;
        batch.push_back({c, std::move(flight)});
      }
    }
    uint64_t bytes = 0;
    for (const ChunkRef& ref : batch) bytes += ref.chunk->compressed_length;
    scheduler_->Charge(bytes);
    SubmitFetch(std::move(batch), FetchKind::kBackground, std::move(permit));
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return background_in_flight_ == 0; });
  return !stopping_;
}

bool LayerReader::WaitBulkReady() {
  bool logged = false;
  for (;;) {
    std::optional<std::chrono::steady_clock::time_point> ready = blob_->BulkReadsReadyAt();
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) return false;
    if (!ready) {
      if (logged) stats_.background = "running";
      return true;
    }
    if (!logged) {
      logged = true;
      LogInfo("background fetch waits for the layer's mirror to store it",
              {{"layer", layer_id_},
               {"fetched_percent", stats_.fetched_percent()},
               {"retry_in_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                   *ready - std::chrono::steady_clock::now())
                                   .count()}});
    }
    stats_.background = "mirror_filling";
    // Woken early only by Stop(); at `ready` the mirror is asked again (by this fetch's next
    // request or an on-demand read), and its answer decides whether to wait more.
    cv_.wait_until(lock, *ready, [&] { return stopping_.load(); });
  }
}

}  // namespace lazypull
