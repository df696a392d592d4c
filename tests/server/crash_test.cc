// Crash safety: kill -9 the daemon during a burst of Prepare/Commit/Remove from several
// threads, restart it on the same root, and check that every call that returned OK is
// reflected and that Cleanup leaves no orphan directory.
#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/server/daemon_fixture.h"

namespace lazypull::testing {
namespace {

// What a worker knows about its own snapshots. Names are unique per worker and round.
struct WorkerLog {
  std::map<std::string, snapshots_v1::Kind> present;  // confirmed by an OK reply
  std::set<std::string> absent;                       // confirmed removed
  std::set<std::string> uncertain;                    // touched by the call in flight at kill
};

// Runs Prepare/Commit/Remove until `stop`, counting each acknowledged call in `acked`.
void Worker(SnapshotClient* client, int worker, int round, std::atomic<bool>* stop,
            std::atomic<int>* acked, WorkerLog* log) {
  std::mt19937 rng(worker * 1000 + round);
  std::string committed_parent;
  for (int i = 0; !stop->load(); ++i) {
    std::string key = absl::StrCat("ns/", round, "/w", worker, "/active-", i);
    std::string name = absl::StrCat("ns/", round, "/w", worker, "/committed-", i);
    log->uncertain = {key};
    grpc::Status s = client->Prepare(key, committed_parent, {{"i", std::to_string(i)}});
    if (!s.ok()) return;  // daemon gone: the outcome of this call is unknown
    ++*acked;
    log->present[key] = snapshots_v1::ACTIVE;
    log->uncertain.clear();
    if (rng() % 3 != 0) {
      log->uncertain = {key, name};
      s = client->Commit(name, key);
      if (!s.ok()) return;
      ++*acked;
      log->present.erase(key);
      log->absent.insert(key);
      log->present[name] = snapshots_v1::COMMITTED;
      log->uncertain.clear();
      if (rng() % 2 == 0) committed_parent = name;
    } else {
      log->uncertain = {key};
      s = client->Remove(key);
      if (!s.ok()) return;
      ++*acked;
      log->present.erase(key);
      log->absent.insert(key);
      log->uncertain.clear();
    }
  }
}

class CrashTest : public DaemonTest {};

TEST_F(CrashTest, KillNineDuringBurstKeepsEveryAcknowledgedCall) {
  std::map<std::string, snapshots_v1::Kind> expected_present;
  std::set<std::string> expected_absent, uncertain;
  for (int round = 0; round < 3; ++round) {
    constexpr int kWorkers = 4;
    std::vector<WorkerLog> logs(kWorkers);
    std::atomic<bool> stop{false};
    std::atomic<int> acked{0};
    std::vector<std::unique_ptr<SnapshotClient>> clients;
    std::vector<std::thread> threads;
    for (int w = 0; w < kWorkers; ++w) {
      clients.push_back(std::make_unique<SnapshotClient>(daemon_->grpc_target()));
      threads.emplace_back(Worker, clients.back().get(), w, round, &stop, &acked, &logs[w]);
    }
    // Kill mid-burst, at a later point of the burst each round (by progress, not by time).
    const int kill_after = 20 + 20 * round;
    const bool progressed =
        WaitUntil([&] { return acked.load() >= kill_after; }, std::chrono::seconds(60));
    daemon_->Kill();
    stop = true;
    for (auto& t : threads) t.join();
    ASSERT_TRUE(progressed) << "only " << acked.load() << " calls acknowledged in 60 s; log:\n"
                            << daemon_->ReadLog();
    for (const WorkerLog& log : logs) {
      for (const auto& [k, kind] : log.present) expected_present[k] = kind;
      expected_absent.insert(log.absent.begin(), log.absent.end());
      uncertain.insert(log.uncertain.begin(), log.uncertain.end());
    }
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  }
  ASSERT_GT(expected_present.size(), 10u) << "the burst did too little to test anything";

  std::vector<snapshots_v1::Info> infos;
  ASSERT_GRPC_OK(client_->List({}, &infos));
  std::map<std::string, snapshots_v1::Kind> listed;
  for (const auto& i : infos) listed[i.name()] = i.kind();
  for (const auto& [key, kind] : expected_present) {
    if (uncertain.contains(key)) continue;
    auto it = listed.find(key);
    ASSERT_NE(it, listed.end()) << "acknowledged snapshot lost: " << key;
    EXPECT_EQ(it->second, kind) << key;
  }
  for (const std::string& key : expected_absent) {
    if (uncertain.contains(key)) continue;
    EXPECT_FALSE(listed.contains(key)) << "acknowledged removal undone: " << key;
  }

  ASSERT_GRPC_OK(client_->Cleanup());
  // Exactly one directory per snapshot, none left over, and each active one is usable.
  std::vector<std::string> dirs = ListDir(SnapshotsDir());
  EXPECT_EQ(dirs.size(), infos.size());
  for (const std::string& d : dirs) EXPECT_FALSE(absl::StartsWith(d, "new-")) << d;
  for (const auto& i : infos) {
    if (i.kind() != snapshots_v1::ACTIVE) continue;
    MountList mounts;
    ASSERT_GRPC_OK(client_->Mounts(i.name(), &mounts));
    std::string target = Dir("m");
    auto m = ScopedMount::Mount(mounts, target);
    ASSERT_TRUE(m.ok()) << i.name() << ": " << m.status();
  }
}

}  // namespace
}  // namespace lazypull::testing
