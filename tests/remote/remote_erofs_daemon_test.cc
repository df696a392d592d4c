// Remote snapshots at the daemon level on the EROFS backend, file-backed and through loop
// devices: graduation to local copies (exact trees without the registry, nothing downloaded
// twice, status), copies of unavailable layers, and the runtime choice of the backend. The
// fixture is remote_daemon_fixture.h.
#include <filesystem>

#include "tests/remote/remote_daemon_fixture.h"

namespace lazypull::testing {
namespace {

// EROFS only: graduation and the runtime choice of the backend.
class RemoteErofsTest : public RemoteDaemonTest {
 protected:
  // Waits until status.json shows `n` layers, all graduated.
  bool WaitGraduated(size_t n) {
    return WaitUntil(
        [&] {
          nlohmann::json st = Status();
          size_t graduated = 0;
          if (st.is_object() && st.contains("layers")) {
            for (const auto& l : st["layers"]) graduated += l.value("graduated", false) ? 1 : 0;
          }
          return graduated == n;
        },
        std::chrono::seconds(60));
  }
};

// Fully fetched eStargz layers graduate to local copies built from their verified chunks
// (nothing moved twice, chunks released from the cache); after a restart with the registry
// gone and the chunk cache deleted, they mount from those copies before gRPC serves (a copy no
// snapshot uses is deleted), and the image reads exactly.
TEST_P(RemoteErofsTest, GraduatedLayersRemountFromLocalCopiesWithoutRegistry) {
  ASSERT_TRUE(daemon_->Stop().ok());
  daemon_.reset();
  StartDaemon(DaemonConfig(GetParam(), "background_fetch = true\nbackground_silence = 0\n"));
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "g");
  ASSERT_TRUE(WaitGraduated(4)) << Status().dump();
  // A layer crosses the network once: the background fetch moved each blob's chunks (plus its
  // TOC), graduation moved nothing more and never GETs a whole blob. The image as a whole
  // moves at most 1.15x its compressed size (a tiny layer's TOC and tail read weigh more).
  const std::vector<RecordedRequest> requests = proxy_->Requests();
  uint64_t moved_total = 0, size_total = 0;
  std::string per_layer;
  for (const oci::Descriptor& layer : image.resolved.manifest.layers) {
    bool unranged = false;
    const uint64_t moved = RangeBytes(requests, layer.digest.hex(), &unranged);
    EXPECT_FALSE(unranged) << layer.digest.ToString() << " was downloaded whole";
    moved_total += moved;
    size_total += layer.size;
    absl::StrAppend(&per_layer, layer.digest.ToString(), ": ", moved, " of ", layer.size, "\n");
  }
  EXPECT_LE(moved_total * 100, size_total * 115) << per_layer;
  // ... and is stored once: its chunks left the cache for the copy.
  ASSERT_TRUE(WaitUntil([&] { return Status()["disk"].value("cache_bytes", uint64_t{1}) == 0; },
                        std::chrono::seconds(60)))
      << Status().dump();
  EXPECT_GT(Status()["disk"].value("graduated_bytes", uint64_t{0}), 0u) << Status().dump();
  auto status = RunCommand({BinaryDir() + "/bin/lazypull", "status", "--root", daemon_->root()},
                           std::chrono::seconds(30));
  ASSERT_TRUE(status.ok());
  for (const oci::Descriptor& layer : image.resolved.manifest.layers) {
    std::vector<std::string> row = StatusTableRow(status->output, layer.digest.hex().substr(0, 12));
    ASSERT_FALSE(row.empty()) << layer.digest.ToString() << " is not listed:\n" << status->output;
    EXPECT_EQ(row[3], "erofs") << status->output;  // BACKEND
    EXPECT_EQ(row[4], "yes") << status->output;    // GRADUATED
  }
  const bool loop = GetParam() == "erofs-loop";
  EXPECT_TRUE(absl::StrContains(
      status->output, loop ? "EROFS attached through loop devices" : "EROFS attached file-backed"))
      << status->output;
  EXPECT_EQ(Status()["mount"].value("erofs_attach", ""), loop ? "loop" : "file") << Status().dump();
  for (const auto& l : Status()["layers"]) {
    EXPECT_EQ(l.value("attach", ""), loop ? "loop" : "file") << l.dump();
  }
  ExpectImageTree(MountActive("before", targets.back()));
  mounts_.clear();

  ASSERT_TRUE(daemon_->Stop().ok());
  proxy_.reset();  // the registry is unreachable from now on
  ASSERT_EQ(RunShell("rm -rf " + daemon_->root() + "/cache", std::chrono::seconds(30))->exit_code,
            0);
  // A copy no snapshot uses (its snapshot removed while no daemon ran) and a failure record of
  // such a layer: deleted at the next start.
  const std::string unused = daemon_->root() + "/erofs/graduated/sha256-" + std::string(64, 'e');
  std::filesystem::create_directories(unused);
  ASSERT_TRUE(WriteFile(unused + "/meta.erofs", "x").ok());
  ASSERT_TRUE(WriteFile(unused + "/layer.blob", "x").ok());
  ASSERT_TRUE(
      WriteFile(daemon_->root() + "/erofs/graduated/.failures-sha256-" + std::string(64, 'f'),
                "1\n")
          .ok());
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  EXPECT_FALSE(std::filesystem::exists(unused));
  EXPECT_FALSE(std::filesystem::exists(daemon_->root() + "/erofs/graduated/.failures-sha256-" +
                                       std::string(64, 'f')));
  for (const oci::Descriptor& layer : image.resolved.manifest.layers) {
    EXPECT_TRUE(
        std::filesystem::exists(daemon_->root() + "/erofs/graduated/sha256-" + layer.digest.hex()))
        << "the copy of a layer in use was deleted";
  }
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  std::string log = daemon_->ReadLog();
  size_t from_local = 0;
  for (size_t at = 0; (at = log.find("mounted from its local copy", at)) != std::string::npos;
       ++at) {
    ++from_local;
  }
  EXPECT_GE(from_local, 4u);
  ASSERT_TRUE(WaitGraduated(4)) << Status().dump();
  MountList mounts;
  std::string dir = MountActive("after", targets.back(), &mounts);
  ExpectImageTree(dir);
  EXPECT_EQ(Status()["unavailable"].size(), 0u);
}

// zstd:chunked layers graduate by rebuilding the original tar from the local chunks plus the
// header frames, without downloading the layers again, kept only if the result hashes to the
// image config's diff_id. lazypull convert keeps the original tar bytes: all 4 layers keep
// their tar. skopeo 1.9 re-serializes tar headers when it writes zstd:chunked but keeps the
// old diff_ids, so its copy of the hand-made (Python PAX) layer does not match its diff_id:
// that layer graduates in its blob layout instead, and the tree is exact either way.
TEST_P(RemoteErofsTest, ZstdChunkedLayersGraduateWithoutADownload) {
  ASSERT_TRUE(daemon_->Stop().ok());
  daemon_.reset();
  StartDaemon(DaemonConfig(GetParam(), "background_fetch = true\nbackground_silence = 0\n"));
  auto graduation_lines = [&](const std::string& digest, const char* what) {
    size_t n = 0;
    for (absl::string_view line : absl::StrSplit(daemon_->ReadLog(), '\n')) {
      n += absl::StrContains(line, digest) && absl::StrContains(line, what);
    }
    return n;
  };
  PushedImage zc = Image("zc");
  std::vector<std::string> targets = PrepareLazyChain(zc, true, "zc");
  ASSERT_TRUE(WaitGraduated(4)) << Status().dump();
  for (const oci::Descriptor& l : zc.resolved.manifest.layers) {
    EXPECT_EQ(graduation_lines(l.digest.ToString(), "\"method\":\"tar\""), 1u)
        << l.digest.ToString() << "\n"
        << daemon_->ReadLog();
  }
  ExpectImageTree(MountActive("zc-c", targets.back()));

  PushedImage skopeo = Image("skopeo-zc");
  targets = PrepareLazyChain(skopeo, true, "sk");
  const std::string odd = skopeo.resolved.manifest.layers[3].digest.ToString();
  ASSERT_TRUE(WaitGraduated(4 + 4)) << Status().dump();
  EXPECT_EQ(graduation_lines(odd, "cannot rebuild the layer's original tar"), 1u)
      << daemon_->ReadLog();
  EXPECT_EQ(graduation_lines(odd, "\"method\":\"blob\""), 1u) << daemon_->ReadLog();
  EXPECT_EQ(graduation_lines(odd, "layer graduation failed"), 0u) << daemon_->ReadLog();
  for (const oci::Descriptor& l : skopeo.resolved.manifest.layers) {
    bool unranged = false;
    RangeBytes(proxy_->Requests(), l.digest.hex(), &unranged);
    EXPECT_FALSE(unranged) << l.digest.ToString() << " was downloaded whole";
  }
  ExpectImageTree(MountActive("sk-c", targets.back()));
  nlohmann::json odd_layer = StatusLayer(skopeo.resolved.manifest.layers[3].digest);
  ASSERT_TRUE(odd_layer.is_object()) << Status().dump();
  EXPECT_EQ(odd_layer["graduated"], true) << odd_layer.dump();
}

// A layer that cannot be re-mounted after a restart (registry gone, its local copy unusable)
// is unavailable, but its local copy is kept at start (a snapshot uses it) and deleted when
// its last snapshot is removed: the release of an unavailable snapshot drops it too.
TEST_P(RemoteErofsTest, RemovingAnUnavailableLayerDeletesItsCopy) {
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "u");
  ASSERT_TRUE(daemon_->Stop().ok());
  proxy_.reset();  // the registry is unreachable from now on
  // No cache and no kept index bytes: only the registry could re-open the indexes.
  ASSERT_EQ(RunShell("rm -rf " + daemon_->root() + "/cache " + daemon_->root() + "/index-bytes",
                     std::chrono::seconds(30))
                ->exit_code,
            0);
  const std::string copy =
      daemon_->root() + "/erofs/graduated/sha256-" + image.resolved.manifest.layers[0].digest.hex();
  ASSERT_TRUE(WriteFile(copy + "/meta.erofs", "not an EROFS image").ok());
  ASSERT_TRUE(WriteFile(copy + "/layer.blob", "x").ok());
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  EXPECT_EQ(Status()["unavailable"].size(), 4u) << Status().dump();
  EXPECT_TRUE(std::filesystem::exists(copy)) << "a copy a snapshot uses was deleted at start";
  for (auto it = targets.rbegin(); it != targets.rend(); ++it) {
    ASSERT_GRPC_OK(client_->Remove(*it));
  }
  EXPECT_FALSE(std::filesystem::exists(copy)) << daemon_->ReadLog();
  EXPECT_TRUE(WaitUntil([&] { return Status()["unavailable"].empty(); }, std::chrono::seconds(30)))
      << Status().dump();
}

// `auto` on a kernel without EROFS (simulated: the probe reads a filesystems list without it)
// falls back to FUSE with one log line; `erofs` there refuses to start.
TEST_P(RemoteErofsTest, AutoFallsBackToFuseAndErofsFailsStartWithoutErofs) {
  ASSERT_TRUE(daemon_->Stop().ok());
  daemon_.reset();
  ASSERT_TRUE(WriteFile(tmp_.Sub("filesystems"), "nodev\tproc\n\text4\nfuseblk\n").ok());
  const std::string probe =
      absl::StrCat("erofs_probe_filesystems = \"", tmp_.Sub("filesystems"), "\"\n");
  StartDaemon(DaemonConfig("auto", "background_fetch = false\n" + probe));
  EXPECT_TRUE(absl::StrContains(daemon_->ReadLog(), "EROFS unavailable")) << daemon_->ReadLog();
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "a");
  MountList mounts;
  ExpectImageTree(MountActive("container", targets.back(), &mounts));
  ASSERT_TRUE(WaitMountedLayers(4));
  for (const auto& l : Status()["layers"]) EXPECT_EQ(l.value("backend", ""), "fuse");
  mounts_.clear();
  ASSERT_TRUE(daemon_->Stop().ok());

  ASSERT_TRUE(
      WriteFile(tmp_.Sub("erofs.toml"), DaemonConfig("erofs", "background_fetch = false\n" + probe))
          .ok());
  auto r = RunCommand(
      {BinaryDir() + "/bin/lazypull-snapshotter", "--root", tmp_.Sub("eroot"), "--address",
       tmp_.Sub("erofs.sock"), "--config", tmp_.Sub("erofs.toml"), "--metrics-address", ""},
      std::chrono::seconds(60));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1) << r->output;
  EXPECT_TRUE(absl::StrContains(r->output, "mount.backend = \\\"erofs\\\" but EROFS is not usable"))
      << r->output;
  daemon_.reset();
}

INSTANTIATE_TEST_SUITE_P(Erofs, RemoteErofsTest, ::testing::Values("erofs", "erofs-loop"),
                         ParamName);

}  // namespace
}  // namespace lazypull::testing
