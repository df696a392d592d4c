// handover_bench (issue 20): the longest read stall a program sees while lazypull restarts
// under it, with the FUSE holder keeping its mounts (FUSE backend: every layer's connection;
// EROFS backend: the blob file system's, under the kernel's EROFS mounts). Readers (a 64 MiB file
// and every file of a four-layer image, through container overlays, page cache dropped after every
// read) run while the daemon is
//   - left alone (baseline: the longest read of an undisturbed window of the same length),
//   - SIGKILLed and restarted (target: longest stall <= 0.5 s),
//   - upgraded by takeover: a successor started with --takeover loads while the daemon still
//     serves and waits for the root lock; then SIGTERM (target: <= 0.2 s),
//   - stopped and started: SIGTERM, then started again (the upgrade before takeover).
// Prints one JSON line per phase and the stall ratios against the baseline. Not a ctest test:
//   build/bin/handover_bench [--gtest_also_run_disabled_tests]   (env HANDOVER_ROUNDS, default 3)
#include <cstdlib>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/remote/handover_fixture.h"

namespace lazypull::testing {
namespace {

// Every read must reach the daemon to measure its stalls: FUSE passthrough (on by default)
// would hand the readers' local files to the kernel.
class HandoverBench : public HandoverTest {
 protected:
  std::string MountConfig() const override {
    return HandoverTest::MountConfig() + "fuse_passthrough = false\n";
  }
};

TEST_P(HandoverBench, Stalls) {
  const char* env = std::getenv("HANDOVER_ROUNDS");
  const int rounds = env != nullptr ? std::max(1, std::atoi(env)) : 3;
  PushedImage small = Image("esgz");
  PushedImage big = Image("big-esgz");
  std::vector<std::string> small_chain = PrepareLazyChain(small, /*cri=*/false, "s");
  std::vector<std::string> big_chain = PrepareLazyChain(big, /*cri=*/false, "b");
  ASSERT_NO_FATAL_FAILURE(StartReaders(MountActive("small-ctr", small_chain.back()),
                                       MountActive("big-ctr", big_chain.back())));
  ExpectReadersProgress("warm-up");  // every chunk fetched once: later reads are local
  auto take = [&] {
    double m = 0;
    for (auto& r : readers_) m = std::max(m, r->TakeMaxStallSeconds());
    return m;
  };
  auto phase = [&](const char* name, const std::function<void()>& disturb) {
    double worst = 0;
    for (int i = 0; i < rounds; ++i) {
      take();
      disturb();
      ExpectReadersProgress(name);
      worst = std::max(worst, take());
    }
    return worst;
  };
  const double baseline = phase("baseline", [] {});
  const double kill = phase("kill", [&] {
    daemon_->Kill();
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  });
  const double upgrade = phase("upgrade", [&] {
    ASSERT_TRUE(daemon_->Upgrade().ok()) << daemon_->ReadLog();  // --takeover, then SIGTERM
  });
  const double stop_start = phase("stop-start", [&] {
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();  // SIGTERM, then start
  });
  ExpectNoReadErrors("at the end");
  for (auto& r : readers_) r->Stop();
  nlohmann::json row = {{"bench", "handover"},
                        {"backend", GetParam()},
                        {"rounds", rounds},
                        {"baseline_max_read_s", baseline},
                        {"kill_restart_max_stall_s", kill},
                        {"graceful_upgrade_max_stall_s", upgrade},
                        {"stop_start_max_stall_s", stop_start},
                        {"kill_vs_baseline", baseline > 0 ? kill / baseline : 0},
                        {"upgrade_vs_baseline", baseline > 0 ? upgrade / baseline : 0},
                        {"target_kill_s", 0.5},
                        {"target_upgrade_s", 0.2}};
  std::cout << row.dump() << std::endl;
  if (std::getenv("HANDOVER_TIMELINE") != nullptr) {  // where a restart's time goes
    for (absl::string_view line : absl::StrSplit(daemon_->ReadLog(), '\n')) {
      if (absl::StrContains(line, "\"level\":\"debug\"")) continue;
      std::cerr << line.substr(0, 200) << "\n";
    }
  }
  readers_.clear();
}

INSTANTIATE_TEST_SUITE_P(Backends, HandoverBench, ::testing::Values("fuse", "erofs"), ParamName);

}  // namespace
}  // namespace lazypull::testing
