// ElfPrefetcher with the node's BackgroundScheduler (ElfPrefetchOptions::background): a start
// walk counts as on-demand activity from its start to its end, so no background request is
// admitted between its rounds; once the walk ended, the background fetch may go again.
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fetcher/layer_reader/background_scheduler.h"
#include "fetcher/startup/elf_prefetcher.h"
#include "gtest/gtest.h"

namespace lazypull::startup {
namespace {

using namespace std::chrono_literals;

// Blocks the walk's first step (its LayerStackFn) until released, so the test can look at the
// scheduler while the walk is in flight.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool released = false;

  void EnterAndWait() {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  }
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return entered; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu);
    released = true;
    cv.notify_all();
  }
};

// What a background Acquire meets first: the permit (kNone) or the reason it would wait.
BackgroundScheduler::WaitReason FirstAnswer(BackgroundScheduler& scheduler) {
  std::optional<BackgroundScheduler::WaitReason> told;
  std::optional<BackgroundScheduler::Permit> permit =
      scheduler.Acquire([&] { return told.has_value(); },
                        [&](BackgroundScheduler::WaitReason r) {
                          if (!told) told = r;
                        });
  if (permit) return BackgroundScheduler::WaitReason::kNone;
  return told.value_or(BackgroundScheduler::WaitReason::kNone);
}

TEST(StartWalkBackgroundTest, AWalkHoldsTheBackgroundFetchUntilItEnds) {
  BackgroundSchedulerOptions policy;
  policy.quiet = 0ms;
  policy.bandwidth = BackgroundSchedulerOptions::kUnlimited;
  auto scheduler = std::make_shared<BackgroundScheduler>(policy);
  ASSERT_EQ(FirstAnswer(*scheduler), BackgroundScheduler::WaitReason::kNone);

  Gate gate;
  ElfPrefetchOptions options;
  options.background = scheduler;
  ElfPrefetcher prefetcher(options, [&](const std::string&) {
    gate.EnterAndWait();
    return std::vector<std::shared_ptr<LayerReader>>{};  // the layer is gone: the walk ends
  });
  prefetcher.PrefetchStart("sha256:top", [] { return StartHint{.executables = {"/bin/app"}}; });
  gate.WaitEntered();
  EXPECT_EQ(scheduler->StatusJson()["on_demand_fetches"], 1u);
  EXPECT_EQ(FirstAnswer(*scheduler), BackgroundScheduler::WaitReason::kOnDemand);

  gate.Release();
  ASSERT_TRUE(prefetcher.WaitIdle(60s));
  EXPECT_EQ(scheduler->StatusJson()["on_demand_fetches"], 0u);
  EXPECT_EQ(FirstAnswer(*scheduler), BackgroundScheduler::WaitReason::kNone);
  EXPECT_EQ(prefetcher.Stats().walks_finished, 0u);  // it never reached the layer
}

TEST(StartWalkBackgroundTest, WithoutASchedulerWalksHoldNothing) {
  BackgroundSchedulerOptions policy;
  policy.quiet = 0ms;
  policy.bandwidth = BackgroundSchedulerOptions::kUnlimited;
  auto scheduler = std::make_shared<BackgroundScheduler>(policy);
  Gate gate;
  ElfPrefetcher prefetcher(ElfPrefetchOptions{}, [&](const std::string&) {
    gate.EnterAndWait();
    return std::vector<std::shared_ptr<LayerReader>>{};
  });
  prefetcher.PrefetchStart("sha256:top", [] { return StartHint{.executables = {"/bin/app"}}; });
  gate.WaitEntered();
  EXPECT_EQ(scheduler->StatusJson()["on_demand_fetches"], 0u);
  EXPECT_EQ(FirstAnswer(*scheduler), BackgroundScheduler::WaitReason::kNone);
  gate.Release();
  ASSERT_TRUE(prefetcher.WaitIdle(60s));
}

}  // namespace
}  // namespace lazypull::startup
