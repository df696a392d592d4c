// Issue 20 with graduation on (the default): an EROFS layer that graduates while a container
// (here: an overlay of this test, its readers reading through it) still holds the lazy mount.
// The switch replaces the layer's mount in place, but the overlay keeps the old lazy EROFS mount,
// whose data blob is a file of the blob file system. That blob must keep being served — from the
// local copy — by every later daemon: after SIGKILLs, a kill right between a request's read and
// its reply, and a graceful upgrade, the readers read exact bytes with 0 errors. Removing the
// snapshots releases the old blob (the blob file system ends empty) and every loop device.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>

#include "tests/remote/handover_fixture.h"

namespace lazypull::testing {
namespace {

class HandoverGraduationTest : public HandoverTest {
 protected:
  std::string MountConfig() const override {
    return "background_fetch = true\nbackground_silence = \"0s\"\nbackground_quiet = \"0s\"\n";
  }
  // Waits until status.json shows `n` layers, all graduated.
  bool WaitGraduated(size_t n) {
    return WaitUntil(
        [&] {
          nlohmann::json st = Status();
          if (!st.is_object() || !st.contains("layers") || st["layers"].size() != n) return false;
          for (const auto& l : st["layers"]) {
            if (!l.value("graduated", false)) return false;
          }
          return true;
        },
        std::chrono::seconds(180));
  }
};

TEST_P(HandoverGraduationTest, OldLazyMountOfAGraduatedLayerSurvivesRestarts) {
  // The overlays hold the lazy EROFS mounts (and so their blob files) from here on.
  TwoImageReaders run;
  ASSERT_NO_FATAL_FAILURE(StartTwoImageReaders(&run));
  const std::vector<std::string>& small_chain = run.small_chain;
  const std::vector<std::string>& big_chain = run.big_chain;
  const size_t layers = run.layers;
  ExpectReadersProgress("before graduation");

  // Every layer graduates; the targets now show the local copies, the overlays keep the old
  // lazy mounts, whose blob files read the copies. Loop devices: two per old lazy mount, two
  // per local copy's mount.
  ASSERT_TRUE(WaitGraduated(layers)) << Status().dump();
  ExpectReadersProgress("after graduation");
  const size_t loops = GetParam() == "erofs-loop" ? 4 * layers : 0;
  EXPECT_EQ(DaemonLoopDevices(daemon_->root()), loops) << LoopDevicesText();

  for (int i = 0; i < 3; ++i) {
    daemon_->Kill();
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
    ASSERT_TRUE(WaitGraduated(layers)) << Status().dump();
    ExpectReadersProgress(absl::StrCat("after kill ", i + 1));
    // The copies were mounted again; the previous mounts of the copies (unused) went, with
    // their loop devices.
    EXPECT_TRUE(WaitUntil([&] { return DaemonLoopDevices(daemon_->root()) == loops; }))
        << LoopDevicesText() << "after kill " << i + 1;
  }
  // The readers' old lazy mounts read through blob files no snapshot mounts any more: this
  // daemon served them from the local copies.
  EXPECT_TRUE(absl::StrContains(daemon_->ReadLog(),
                                "old lazy mount of a graduated layer served from its local copy"))
      << daemon_->ReadLog();

  // Killed between reading a request and answering it: the next daemon gets it resent.
  ASSERT_NO_FATAL_FAILURE(KillBetweenReadAndReply());

  // Upgrade: SIGTERM (finish in flight, hand over), then start.
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ASSERT_TRUE(WaitGraduated(layers)) << Status().dump();
  ExpectReadersProgress("after a graceful restart");
  EXPECT_TRUE(WaitUntil([&] { return DaemonLoopDevices(daemon_->root()) == loops; }))
      << LoopDevicesText() << "after the graceful restart";

  // New containers after the last restart are exact (local copies).
  ExpectImageTree(MountActive("after-ctr", small_chain.back()));
  for (auto& r : readers_) r->Stop();
  ExpectNoReadErrors("at the end");

  // Remove everything: the old lazy mounts go with the overlays, their blobs with the
  // snapshots; no loop device, layer mount or held fd is left.
  RemoveAllExpectNothingLeft({"small-ctr", "big-ctr", "after-ctr"}, {&small_chain, &big_chain});
  EXPECT_FALSE(std::filesystem::exists(daemon_->root() + "/erofs/graduated/sha256-" +
                                       run.small.resolved.manifest.layers[0].digest.hex()));
}

// The same with zstd:chunked layers, whose copies are the layers' original tars: the old lazy
// mount's blob (blob layout) is read from the tar through a map of extents, not byte for byte.
TEST_P(HandoverGraduationTest, OldLazyMountReadsATarCopyAfterRestarts) {
  PushedImage zc = Image("zc");
  std::vector<std::string> chain = PrepareLazyChain(zc, /*cri=*/true, "z");
  const size_t layers = chain.size();
  const std::string dir = MountActive("zc-ctr", chain.back());
  std::vector<HandoverReader::File> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(images->rootfs)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    auto content = ReadFile(e.path().string());
    ASSERT_TRUE(content.ok());
    files.push_back(
        {dir + "/" + std::filesystem::relative(e.path(), images->rootfs).string(), *content});
  }
  readers_.push_back(std::make_unique<HandoverReader>(std::move(files)));
  ExpectReadersProgress("before graduation");
  ASSERT_TRUE(WaitGraduated(layers)) << Status().dump();
  EXPECT_TRUE(absl::StrContains(daemon_->ReadLog(), "\"method\":\"tar\"")) << daemon_->ReadLog();
  ExpectReadersProgress("after graduation");
  for (int i = 0; i < 2; ++i) {
    daemon_->Kill();
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
    ExpectReadersProgress(absl::StrCat("after kill ", i + 1));
  }
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();  // graceful
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ExpectReadersProgress("after a graceful restart");
  EXPECT_TRUE(absl::StrContains(daemon_->ReadLog(),
                                "old lazy mount of a graduated layer served from its local copy"));
  for (auto& r : readers_) r->Stop();
  ExpectNoReadErrors("at the end");
  RemoveAllExpectNothingLeft({"zc-ctr"}, {&chain});
}

INSTANTIATE_TEST_SUITE_P(Backends, HandoverGraduationTest, ::testing::Values("erofs", "erofs-loop"),
                         ParamName);

}  // namespace
}  // namespace lazypull::testing
