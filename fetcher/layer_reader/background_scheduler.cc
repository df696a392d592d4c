#include "fetcher/layer_reader/background_scheduler.h"

#include <algorithm>

namespace lazypull {
namespace {

constexpr uint64_t kMinSampleBytes = 256 << 10;
constexpr size_t kMaxSamples = 16;
// Samples older than this no longer describe the link (routes and neighbours change).
constexpr std::chrono::seconds kSampleLifetime{60};
// Longest Acquire sleeps before re-checking `stop`.
constexpr std::chrono::milliseconds kPoll{100};

}  // namespace

BackgroundScheduler::BackgroundScheduler(BackgroundSchedulerOptions options) : options_(options) {}

BackgroundScheduler::ForegroundActivity::~ForegroundActivity() {
  if (owner_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(owner_->mu_);
    --owner_->foreground_;
    owner_->last_foreground_end_ = Clock::now();
  }
  owner_->cv_.notify_all();
}

BackgroundScheduler::ForegroundActivity BackgroundScheduler::BeginForeground() {
  std::lock_guard<std::mutex> lock(mu_);
  ++foreground_;
  return ForegroundActivity(this);
}

BackgroundScheduler::Permit::~Permit() {
  if (owner_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(owner_->mu_);
    --owner_->in_flight_;
  }
  owner_->cv_.notify_all();
}

std::optional<BackgroundScheduler::Permit> BackgroundScheduler::Acquire(
    const std::function<bool()>& stop, const std::function<void(WaitReason)>& on_wait) {
  WaitReason told = WaitReason::kNone;
  auto tell = [&](WaitReason r) {
    if (r != told && on_wait) on_wait(r);
    told = r;
  };
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // `stop` may take the caller's locks: never call it with mu_ held.
    lock.unlock();
    const bool stopped = stop();
    lock.lock();
    if (stopped) {
      lock.unlock();
      tell(WaitReason::kNone);
      return std::nullopt;
    }
    const auto now = Clock::now();
    WaitReason reason = WaitReason::kNone;
    Clock::time_point until = now + kPoll;
    if (foreground_ > 0) {
      reason = WaitReason::kOnDemand;
    } else if (now < last_foreground_end_ + options_.quiet) {
      reason = WaitReason::kOnDemand;
      until = std::min(until, last_foreground_end_ + options_.quiet);
    } else if (in_flight_ >= options_.max_in_flight) {
      reason = WaitReason::kConcurrency;
    } else if (now < next_send_) {
      reason = WaitReason::kBandwidth;
      until = std::min(until, next_send_);
    }
    if (reason == WaitReason::kNone) {
      ++in_flight_;
      lock.unlock();
      tell(WaitReason::kNone);
      return Permit(this);
    }
    lock.unlock();
    tell(reason);
    lock.lock();
    cv_.wait_until(lock, until);
  }
}

void BackgroundScheduler::Charge(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t budget = BudgetLocked();
  if (budget == BackgroundSchedulerOptions::kUnlimited) return;
  // The bytes are "spent" over bytes/budget seconds from now, or from the end of the previous
  // request's share when that is later.
  next_send_ = std::max(next_send_, Clock::now()) +
               std::chrono::nanoseconds(static_cast<int64_t>(static_cast<double>(bytes) * 1e9 /
                                                             static_cast<double>(budget)));
}

void BackgroundScheduler::RecordTransfer(uint64_t bytes, std::chrono::nanoseconds elapsed) {
  if (elapsed.count() <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes < kMinSampleBytes) {
    rtt_samples_.push_back({Clock::now(), static_cast<double>(elapsed.count()) / 1e9});
    while (rtt_samples_.size() > kMaxSamples) rtt_samples_.pop_front();
    return;
  }
  samples_.push_back({Clock::now(), static_cast<double>(bytes) * 1e9 / elapsed.count()});
  while (samples_.size() > kMaxSamples) samples_.pop_front();
}

uint64_t BackgroundScheduler::BandwidthDelayProduct() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (rtt_samples_.empty()) return 0;
  const auto oldest = Clock::now() - kSampleLifetime;
  double rtt = 0;
  for (const Sample& s : rtt_samples_) {
    if (s.at >= oldest && (rtt == 0 || s.bytes_per_second < rtt)) rtt = s.bytes_per_second;
  }
  if (rtt == 0) rtt = rtt_samples_.back().bytes_per_second;
  return static_cast<uint64_t>(static_cast<double>(LinkEstimateLocked()) * rtt);
}

void BackgroundScheduler::Wake() { cv_.notify_all(); }

uint64_t BackgroundScheduler::LinkEstimateLocked() const {
  const auto oldest = Clock::now() - kSampleLifetime;
  double best = 0;
  for (const Sample& s : samples_) {
    if (s.at >= oldest) best = std::max(best, s.bytes_per_second);
  }
  // The newest sample stands even when old: a stale estimate beats none.
  if (best == 0 && !samples_.empty()) best = samples_.back().bytes_per_second;
  return static_cast<uint64_t>(best);
}

uint64_t BackgroundScheduler::BudgetLocked() const {
  if (options_.bandwidth != 0) return options_.bandwidth;
  const uint64_t link = LinkEstimateLocked();
  if (link == 0) return std::max(options_.initial_bandwidth, options_.min_bandwidth);
  return std::max(static_cast<uint64_t>(static_cast<double>(link) * options_.bandwidth_fraction),
                  options_.min_bandwidth);
}

uint64_t BackgroundScheduler::budget() const {
  std::lock_guard<std::mutex> lock(mu_);
  return BudgetLocked();
}

nlohmann::json BackgroundScheduler::StatusJson() const {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t budget = BudgetLocked();
  return {{"link_bytes_per_second", LinkEstimateLocked()},
          {"background_budget_bytes_per_second", budget == BackgroundSchedulerOptions::kUnlimited
                                                     ? nlohmann::json(nullptr)
                                                     : nlohmann::json(budget)},
          {"on_demand_fetches", foreground_},
          {"background_requests", in_flight_}};
}

std::string_view BackgroundScheduler::WaitReasonName(WaitReason reason) {
  switch (reason) {
    case WaitReason::kNone:
      return "running";
    case WaitReason::kOnDemand:
      return "paused";
    case WaitReason::kBandwidth:
      return "throttled";
    case WaitReason::kConcurrency:
      return "queued";
  }
  return "running";
}

}  // namespace lazypull
