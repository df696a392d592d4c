// BackgroundScheduler: decides, for the whole node, when a background fetch (the fetch that
// makes a lazy layer fully local) may send its next request, so that containers' own reads
// always own the link. One instance is shared by every LayerReader of the daemon.
//
// Rules for a background request to start:
//   * no on-demand fetch is in progress anywhere (a reader waiting for registry bytes, an
//     eStargz prefetch at mount, a readahead a reader triggered), and none ended within
//     `quiet` (a program's next read usually follows its last one within milliseconds);
//   * fewer than `max_in_flight` background requests are running node-wide;
//   * the node-wide bandwidth budget allows it: requests are paced so that background bytes
//     average at most `bandwidth` bytes/s. `bandwidth` 0 = auto: `bandwidth_fraction` of the
//     link throughput estimated from recent large transfers (on-demand and background alike);
//     `initial_bandwidth` until a transfer has been measured; never below `min_bandwidth`.
//     kUnlimited = no pacing.
// A layer's own silence period (no background fetch until the layer saw no on-demand fetch
// for a while) is kept by its LayerReader, which knows its reads.
//
// Thread-safety: all methods are thread-safe. Permits and ForegroundActivity handles must not
// outlive the scheduler.
#ifndef LAZYPULL_FETCHER_LAYER_READER_BACKGROUND_SCHEDULER_H_
#define LAZYPULL_FETCHER_LAYER_READER_BACKGROUND_SCHEDULER_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>

#include "nlohmann/json.hpp"

namespace lazypull {

struct BackgroundSchedulerOptions {
  static constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

  std::chrono::milliseconds quiet{500};
  uint64_t bandwidth = 0;  // bytes/s; 0 = auto; kUnlimited = no pacing
  double bandwidth_fraction = 0.5;
  uint64_t initial_bandwidth = 4 << 20;
  uint64_t min_bandwidth = 1 << 20;
  size_t max_in_flight = 2;
};

class BackgroundScheduler {
 public:
  // Why a background fetch is waiting, for status.
  enum class WaitReason { kNone, kOnDemand, kBandwidth, kConcurrency };

  explicit BackgroundScheduler(BackgroundSchedulerOptions options = {});
  BackgroundScheduler(const BackgroundScheduler&) = delete;
  BackgroundScheduler& operator=(const BackgroundScheduler&) = delete;

  // An on-demand fetch in progress; background requests wait while any exists. Move-only.
  class ForegroundActivity {
   public:
    ForegroundActivity(ForegroundActivity&& other) noexcept : owner_(other.owner_) {
      other.owner_ = nullptr;
    }
    ForegroundActivity& operator=(ForegroundActivity&&) = delete;
    ~ForegroundActivity();

   private:
    friend class BackgroundScheduler;
    explicit ForegroundActivity(BackgroundScheduler* owner) : owner_(owner) {}
    BackgroundScheduler* owner_;
  };
  ForegroundActivity BeginForeground();

  // The right to run one background request; releases its slot when destroyed. Move-only.
  class Permit {
   public:
    Permit(Permit&& other) noexcept : owner_(other.owner_) { other.owner_ = nullptr; }
    Permit& operator=(Permit&&) = delete;
    ~Permit();

   private:
    friend class BackgroundScheduler;
    explicit Permit(BackgroundScheduler* owner) : owner_(owner) {}
    BackgroundScheduler* owner_;
  };

  // Blocks until a background request may start by the rules above and returns its permit.
  // Returns nullopt as soon as `stop()` is true (checked whenever the scheduler wakes, at
  // least every 100 ms and on Wake()). `on_wait` (may be empty) is told why the caller waits,
  // and kNone when it may go.
  std::optional<Permit> Acquire(const std::function<bool()>& stop,
                                const std::function<void(WaitReason)>& on_wait = {});

  // Charges `bytes` of a background request to the budget: the next request may start once
  // they have "drained" at the budget's rate.
  void Charge(uint64_t bytes);

  // Reports a finished transfer (any kind) for the link estimate. Transfers of 256 KiB and
  // more measure the bandwidth; smaller ones are dominated by latency and measure the round
  // trip instead (the fastest recent one).
  void RecordTransfer(uint64_t bytes, std::chrono::nanoseconds elapsed);

  // The link's bandwidth-delay product in bytes (what the link carries during one round trip),
  // from the estimates above; 0 while either is unknown.
  uint64_t BandwidthDelayProduct() const;

  // Wakes every Acquire to re-check its stop condition.
  void Wake();

  // Current budget in bytes/s (kUnlimited when not paced) and link estimate (0 if unknown).
  uint64_t budget() const;
  // {"link_bytes_per_second", "background_budget_bytes_per_second" (null = unlimited),
  //  "on_demand_fetches", "background_requests"}
  nlohmann::json StatusJson() const;

  static std::string_view WaitReasonName(WaitReason reason);

 private:
  using Clock = std::chrono::steady_clock;
  uint64_t BudgetLocked() const;
  uint64_t LinkEstimateLocked() const;

  const BackgroundSchedulerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t foreground_ = 0;
  Clock::time_point last_foreground_end_{};
  size_t in_flight_ = 0;
  Clock::time_point next_send_{};
  struct Sample {
    Clock::time_point at;
    double bytes_per_second;
  };
  std::deque<Sample> samples_;      // recent large transfers, newest last
  std::deque<Sample> rtt_samples_;  // recent small transfers (bytes_per_second = seconds)
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_BACKGROUND_SCHEDULER_H_
