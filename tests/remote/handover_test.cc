// Issue 20: running readers never notice the daemon dying or being upgraded. A FUSE holder
// (lazypull-fuse-holder) keeps every lazy layer's FUSE connection (FUSE backend) or the blob
// file system's (EROFS backend, file-backed and through loop devices: the kernel's EROFS
// mounts stay); each restarted daemon adopts them. Readers (threads of this test reading through a
// container's overlay, page cache dropped after every read so every pass reaches the daemon) read a
// 64 MiB file and hash-compare every small file of the test image in a loop while the daemon is
// SIGKILLed 10 times, killed between a request's read and its reply (deterministic test hook), and
// upgraded with SIGTERM + start. Synchronisation is by the readers' progress counters, never by
// sleeping.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>

#include "tests/remote/handover_fixture.h"

namespace lazypull::testing {
namespace {

TEST_P(HandoverTest, ReadersSurviveKillsCrashMidRequestAndUpgrade) {
  TwoImageReaders run;
  ASSERT_NO_FATAL_FAILURE(StartTwoImageReaders(&run));
  const std::vector<std::string>& small_chain = run.small_chain;
  const std::vector<std::string>& big_chain = run.big_chain;
  const size_t layers = run.layers;
  ExpectReadersProgress("before any restart");
  const std::map<std::string, dev_t> first_mounts = LazyMountDevs();
  EXPECT_EQ(first_mounts.size(), layers);
  const size_t loops = DaemonLoopDevices(daemon_->root());
  EXPECT_EQ(loops, GetParam() == "erofs-loop" ? 2 * layers : 0);

  for (int i = 0; i < 10; ++i) {
    daemon_->Kill();
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
    ExpectReadersProgress(absl::StrCat("after kill ", i + 1));
    ExpectAllAdopted(layers);
    // Adoption attaches no loop device and none is lost: the ones of the adopted mounts stay.
    EXPECT_EQ(DaemonLoopDevices(daemon_->root()), loops)
        << LoopDevicesText() << " after kill " << i + 1;
  }
  const double kill_stall = MaxStall();
  EXPECT_EQ(LazyMountDevs(), first_mounts) << "adoption mounts nothing";
  EXPECT_EQ(DaemonLoopDevices(daemon_->root()), loops) << "adoption attaches no loop device";

  // Killed between reading a request and answering it: the next daemon gets it resent.
  ASSERT_NO_FATAL_FAILURE(KillBetweenReadAndReply());
  ExpectAllAdopted(layers);
  // The request the killed daemon had read reached this one again (bit 63 of its unique).
  EXPECT_TRUE(WaitUntil([&] { return ExpectAllAdopted(layers) >= 1; }))
      << "the unanswered request was not resent";

  // Upgrade: SIGTERM (finish in flight, hand over), then start.
  const std::string metrics_address = absl::StrCat("127.0.0.1:", PickFreePort());
  daemon_->options().metrics_address = metrics_address;
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ExpectReadersProgress("after a graceful restart");
  // Every request the old daemon took was answered before it left: nothing to resend, so this
  // works on kernels without FUSE_NOTIFY_RESEND too.
  EXPECT_EQ(ExpectAllAdopted(layers), 0u) << "a graceful handover leaves nothing unanswered";
  EXPECT_TRUE(absl::StrContains(daemon_->ReadLog(), "\"msg\":\"lazy layer handed over\""));
  // Issue 22 (FUSE layers; EROFS reads its blob files through the kernel anyway): the readers'
  // files are local by now, so this daemon opens them in FUSE passthrough mode (the kernel
  // reads the backing files), also on adopted connections; files its predecessors left open
  // keep their io mode (the handover ledger), so no read failed.
  if (GetParam() == "fuse") {
    EXPECT_TRUE(WaitUntil([&] {
      uint64_t passthrough_opens = 0;
      const nlohmann::json status = Status();
      for (const auto& l : status.value("layers", nlohmann::json::array())) {
        if (l.value("passthrough", "") != "on") return false;
        passthrough_opens += l.value("passthrough_opens", uint64_t{0});
      }
      return passthrough_opens > 0;
    })) << Status().dump();
  }

  EXPECT_EQ(LazyMountDevs(), first_mounts) << "adoption mounts nothing";
  EXPECT_EQ(DaemonLoopDevices(daemon_->root()), loops) << "adoption attaches no loop device";

  // `lazypull status` and the metrics say so.
  auto status = RunCommand({BinaryDir() + "/bin/lazypull", "status", "--root", daemon_->root()},
                           std::chrono::seconds(30));
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(absl::StrContains(status->output, " ADOPTED ")) << status->output;
  for (const PushedImage* image : {&run.small, &run.big}) {
    for (const oci::Descriptor& layer : image->resolved.manifest.layers) {
      std::vector<std::string> row =
          StatusTableRow(status->output, layer.digest.hex().substr(0, 12));
      ASSERT_GE(row.size(), 10u) << status->output;
      EXPECT_EQ(row[9], "yes") << status->output;  // ADOPTED
    }
  }
  auto metrics = RunCommand(
      {"curl", "-sS", "--fail", "--max-time", "10", "http://" + metrics_address + "/metrics"},
      std::chrono::seconds(30));
  ASSERT_TRUE(metrics.ok());
  EXPECT_TRUE(absl::StrContains(metrics->output,
                                absl::StrCat("lazypull_fuse_adoptions_total ", layers, "\n")))
      << metrics->output;
  EXPECT_TRUE(absl::StrContains(metrics->output, "lazypull_fuse_resent_requests_total "))
      << metrics->output;
  std::cerr << "longest read stall: " << kill_stall << " s across kills, " << MaxStall()
            << " s overall\n";

  // New containers after the last restart are exact.
  ExpectImageTree(MountActive("after-ctr", small_chain.back()));
  for (auto& r : readers_) r->Stop();
  ExpectNoReadErrors("at the end");

  // Remove everything: every layer mount, loop device and held fd goes (the EROFS blob file
  // system stays mounted, empty, for the daemon's next lazy layer).
  RemoveAllExpectNothingLeft({"small-ctr", "big-ctr", "after-ctr"}, {&small_chain, &big_chain});
  if (!SharedHeldKeys().empty()) {
    auto all = mount::MountsUnder(daemon_->root());
    ASSERT_TRUE(all.ok());
    size_t fuse = 0;
    for (const auto& m : *all) fuse += m.fstype == "fuse.lazypull";
    EXPECT_EQ(fuse, 1u) << "only the blob file system";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, HandoverTest, ::testing::Values("fuse", "erofs", "erofs-loop"),
                         ParamName);

}  // namespace
}  // namespace lazypull::testing
