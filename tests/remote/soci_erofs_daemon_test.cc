// SOCI layers (issue 19) at the daemon level on EROFS, against a real docker-registry: the plain
// gzip test image src:v1, untouched, indexed by `lazypull index create` (v2) and prepared with
// CRI's labels. Lazily, each layer's blob is its uncompressed tar (512-byte blocks) and the tree
// is exact; after the background fetch, every layer graduates to its ORIGINAL tar (checked against
// the image config's diff_id), the mounts switch to the copies (mountinfo names them), and the
// image reads exactly with no registry request after. An image whose config names a wrong diff_id
// keeps its layer lazy, with one log line saying why. The first Prepare fetches every layer's
// zTOC (index preload), once. The fixture is remote_daemon_fixture.h.
#include <sys/statfs.h>

#include <filesystem>

#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/soci_index_finder.h"
#include "tests/remote/remote_daemon_fixture.h"

namespace lazypull::testing {
namespace {

// The source of the mount at `target` in /proc/self/mountinfo (an EROFS mount's image file);
// "" if nothing is mounted there.
std::string MountSource(const std::string& target) {
  std::ifstream in("/proc/self/mountinfo");
  std::string source;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() < 10 || f[4] != target) continue;
    for (size_t i = 6; i + 2 < f.size(); ++i) {
      if (f[i] == "-") {
        source = f[i + 2];
        break;
      }
    }
  }
  return source;
}

// Log lines of the daemon that contain every one of `parts`.
size_t LogLines(const std::string& log, const std::vector<std::string>& parts) {
  size_t n = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    bool all = true;
    for (const std::string& p : parts) all = all && absl::StrContains(line, p);
    n += all;
  }
  return n;
}

class SociErofsDaemonTest : public RemoteDaemonTest {
 protected:
  static void SetUpTestSuite() {
    RemoteDaemonTest::SetUpTestSuite();
    if (!images->status.ok()) return;
    // soci:v1 = src:v1 with a SOCI index of every layer, in small spans.
    auto indexed =
        RunCommand({BinaryDir() + "/bin/lazypull", "index", "create", "--plain-http", "--span-size",
                    "64KiB", "--min-layer-size", "0", images->registry->host() + "/src:v1",
                    images->registry->host() + "/soci:v1"},
                   std::chrono::seconds(300));
    if (!indexed.ok() || indexed->exit_code != 0) {
      images->status =
          indexed.ok() ? absl::InternalError("index create: " + indexed->output) : indexed.status();
    }
  }

  std::string Graduated() const { return daemon_->root() + "/erofs/graduated"; }
  std::string CopyDir(const Digest& layer) const { return Graduated() + "/sha256-" + layer.hex(); }
};

TEST_P(SociErofsDaemonTest, LayersGraduateToTheirOriginalTars) {
  PushedImage image = Image("soci");
  const std::vector<oci::Descriptor>& layers = image.resolved.manifest.layers;
  ASSERT_EQ(layers.size(), 4u);
  registry::RegistryClient client(registry::RegistryConfig{}, registry::NewCurlTransport());
  auto config = client.FetchConfig(image.resolved.reference, image.resolved.manifest);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<Digest> diff_ids = config->diff_ids();
  // Lazy (this daemon has no background fetch): the blob of each layer is its tar.
  std::vector<std::string> targets = PrepareLazyChain(image, true, "s");
  ASSERT_TRUE(WaitMountedLayers(4)) << Status().dump();
  EXPECT_EQ(LogLines(daemon_->ReadLog(), {"lazy layer mounted", "\"layout\":\"tar\""}), 4u)
      << daemon_->ReadLog();
  for (const auto& l : Status()["layers"]) {
    EXPECT_EQ(l.value("format", ""), "soci") << l.dump();
    EXPECT_FALSE(l.value("graduated", true)) << l.dump();
    const std::string target = l.value("target", "");
    struct statfs sf;
    ASSERT_EQ(statfs(target.c_str(), &sf), 0) << target;
    EXPECT_EQ(sf.f_bsize, 512) << target;
    EXPECT_NE(MountSource(target).find(daemon_->root() + "/erofs/images/"), std::string::npos)
        << MountSource(target);
  }
  // Every layer is served through the fine index `index create` wrote by default.
  for (const oci::Descriptor& layer : layers) {
    EXPECT_GE(LogLines(daemon_->ReadLog(),
                       {"SOCI layer opened through its fine index", layer.digest.ToString()}),
              1u)
        << daemon_->ReadLog();
  }
  ExpectImageTree(MountActive("lazy", targets.back()));
  mounts_.clear();

  // The same snapshots, re-mounted by a daemon with background fetch: every layer becomes local
  // and graduates to its original tar.
  ASSERT_TRUE(daemon_->Stop().ok());
  daemon_.reset();
  StartDaemon(DaemonConfig(GetParam(), "background_fetch = true\nbackground_silence = 0\n"));
  ASSERT_TRUE(WaitUntil(
      [&] {
        nlohmann::json st = Status();
        size_t graduated = 0;
        if (st.is_object() && st.contains("layers")) {
          for (const auto& l : st["layers"]) graduated += l.value("graduated", false) ? 1 : 0;
        }
        return graduated == 4;
      },
      std::chrono::seconds(120)))
      << Status().dump();
  const std::string log = daemon_->ReadLog();
  ASSERT_EQ(diff_ids.size(), layers.size());
  EXPECT_EQ(LogLines(log, {"fine index unusable"}), 0u) << log;
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE(layers[i].digest.ToString());
    // Re-opened after the restart from the persisted annotations, the same way.
    EXPECT_GE(
        LogLines(log, {"SOCI layer opened through its fine index", layers[i].digest.ToString()}),
        1u);
    EXPECT_EQ(LogLines(log, {"layer graduated", layers[i].digest.ToString(), "\"method\":\"tar\""}),
              1u);
    auto info = ReadFile(CopyDir(layers[i].digest) + "/info.json");
    ASSERT_TRUE(info.ok()) << info.status();
    auto json = nlohmann::json::parse(*info);
    EXPECT_EQ(json.value("method", ""), "tar");
    EXPECT_EQ(json.value("diff_id", ""), diff_ids[i].ToString());
    // The copy is the layer's tar: it hashes to the diff_id.
    auto tar = ReadFile(CopyDir(layers[i].digest) + "/layer.tar");
    ASSERT_TRUE(tar.ok()) << tar.status();
    EXPECT_EQ(Digest::Of(*tar), diff_ids[i]);
  }
  for (const auto& l : Status()["layers"]) {
    const Digest d = *Digest::Parse(l.value("digest", ""));
    EXPECT_EQ(MountSource(l.value("target", "")), CopyDir(d) + "/meta.erofs") << l.dump();
    EXPECT_EQ(l.value("format", ""), "soci") << l.dump();
  }
  // Nothing was downloaded whole, and once graduated the registry is not asked again.
  const std::vector<RecordedRequest> before = proxy_->Requests();
  for (const oci::Descriptor& layer : layers) {
    bool unranged = false;
    RangeBytes(before, layer.digest.hex(), &unranged);
    EXPECT_FALSE(unranged) << layer.digest.ToString() << " was downloaded whole";
  }
  ExpectImageTree(MountActive("graduated", targets.back()));
  EXPECT_EQ(proxy_->Requests().size(), before.size());
}

// GETs of the blob `digest_hex` that `requests` holds.
size_t BlobGets(const std::vector<RecordedRequest>& requests, const std::string& digest_hex) {
  size_t n = 0;
  for (const RecordedRequest& r : requests) {
    if (r.method == "GET" && absl::StrContains(r.target, "/blobs/sha256:" + digest_hex)) ++n;
  }
  return n;
}

// The first Prepare of a SOCI-indexed image opens every other layer's index too: a plain gzip
// layer says nothing lazy itself, but the image's SOCI index names its zTOC, which is fetched
// (and verified) then, in parallel, so the later Prepares only mount. Each zTOC is fetched
// exactly once, and no layer blob is downloaded.
TEST_P(SociErofsDaemonTest, FirstPrepareFetchesEveryLayersZtoc) {
  PushedImage image = Image("soci");
  const std::vector<oci::Descriptor>& layers = image.resolved.manifest.layers;
  ASSERT_EQ(layers.size(), 4u);
  registry::RegistryClient client(registry::RegistryConfig{}, registry::NewCurlTransport());
  auto found = soci::FindSociIndex(client, image.resolved.reference,
                                   image.resolved.manifest_descriptor.digest);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  std::vector<std::string> ztocs;
  for (const oci::Descriptor& layer : layers) {
    const soci::ZtocRef* z = (*found)->index.Find(layer.digest);
    ASSERT_NE(z, nullptr) << layer.digest.ToString();
    // `index create` wrote a fine index (its default), which the daemon fetches instead.
    const std::string fine = z->ztoc.Annotation(std::string(soci::kAnnotationFineZtocDigest));
    ASSERT_FALSE(fine.empty()) << layer.digest.ToString();
    ztocs.push_back(Digest::Parse(fine)->hex());
  }
  proxy_->ClearRequests();
  grpc::Status s = client_->Prepare("z-extract-0", "", CriLabels(image, 0, "z-layer-0"));
  ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  ASSERT_TRUE(WaitUntil([&] {
    const std::vector<RecordedRequest> seen = proxy_->Requests();
    for (const std::string& z : ztocs) {
      if (BlobGets(seen, z) == 0) return false;
    }
    return true;
  })) << "not every (fine) zTOC was fetched after the first Prepare";
  const std::vector<RecordedRequest> before = proxy_->Requests();
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_EQ(BlobGets(before, ztocs[l]), 1u) << "zTOC of layer " << l;
  }
  std::string parent = "z-layer-0";
  for (size_t l = 1; l < layers.size(); ++l) {
    const std::string target = absl::StrCat("z-layer-", l);
    s = client_->Prepare(absl::StrCat("z-extract-", l), parent, CriLabels(image, l, target));
    ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
    parent = target;
  }
  ASSERT_TRUE(WaitMountedLayers(4)) << Status().dump();
  for (const auto& l : Status()["layers"]) EXPECT_EQ(l.value("format", ""), "soci") << l.dump();
  const std::vector<RecordedRequest> after = proxy_->Requests();
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_EQ(BlobGets(after, ztocs[l]), 1u) << "zTOC of layer " << l << " fetched again";
    bool unranged = false;
    RangeBytes(after, layers[l].digest.hex(), &unranged);
    EXPECT_FALSE(unranged) << layers[l].digest.ToString() << " was downloaded whole";
  }
  ExpectImageTree(MountActive("preloaded", parent));
}

// The image config names a diff_id its (SOCI-indexed) layer does not have: the layer is served
// lazily from its verified spans, the graduation fails with one log line naming both digests,
// no copy is kept, and the mount stays on its lazy blob.
TEST_P(SociErofsDaemonTest, ADiffIdMismatchKeepsTheLayerLazy) {
  const std::string src = tmp_.Sub("baddiff-src");
  std::filesystem::create_directories(src + "/etc");
  ASSERT_TRUE(WriteFile(src + "/etc/motd", "served from verified spans\n").ok());
  ASSERT_TRUE(WriteFile(src + "/data.bin", RandomBytes(300000, 9)).ok());
  const std::string tgz = tmp_.Sub("baddiff.tar.gz");
  ASSERT_EQ(RunShell("tar --numeric-owner -C " + src + " -cf - . | gzip -c > " + tgz,
                     std::chrono::seconds(60))
                ->exit_code,
            0);
  auto blob = ReadFile(tgz);
  ASSERT_TRUE(blob.ok());
  const Digest lie = Digest::Of("not this layer's tar");
  const std::string layout = tmp_.Sub("baddiff-layout");
  ASSERT_TRUE(WriteOneLayerLayout(layout, *blob, {}, lie).ok());
  const std::string host = images->registry->host();
  ASSERT_TRUE(images->registry->PushOciLayout(layout, "v1", "baddiff:v1").ok());
  auto indexed = RunCommand(
      {BinaryDir() + "/bin/lazypull", "index", "create", "--plain-http", "--span-size", "64KiB",
       "--min-layer-size", "0", host + "/baddiff:v1", host + "/baddiff-soci:v1"},
      std::chrono::seconds(120));
  ASSERT_TRUE(indexed.ok() && indexed->exit_code == 0)
      << (indexed.ok() ? indexed->output : indexed.status().ToString());

  ASSERT_TRUE(daemon_->Stop().ok());
  daemon_.reset();
  StartDaemon(DaemonConfig(GetParam(), "background_fetch = true\nbackground_silence = 0\n"));
  PushedImage image = Image("baddiff-soci");
  ASSERT_EQ(image.resolved.manifest.layers.size(), 1u);
  const Digest layer = image.resolved.manifest.layers[0].digest;
  std::vector<std::string> targets = PrepareLazyChain(image, true, "b");
  ASSERT_TRUE(WaitUntil(
      [&] {
        nlohmann::json l = StatusLayer(layer);
        return l.is_object() && l.value("graduation", "") == "failed";
      },
      std::chrono::seconds(60)))
      << Status().dump();
  ASSERT_TRUE(StatusLayer(layer).is_object());
  EXPECT_FALSE(StatusLayer(layer).value("graduated", true));
  EXPECT_EQ(StatusLayer(layer).value("format", ""), "soci");
  EXPECT_EQ(LogLines(daemon_->ReadLog(), {"layer graduation failed; it stays lazy",
                                          layer.ToString(), lie.ToString(), "diff_id"}),
            1u)
      << daemon_->ReadLog();
  EXPECT_FALSE(std::filesystem::exists(CopyDir(layer)));
  const std::string target = StatusLayer(layer).value("target", "");
  EXPECT_NE(MountSource(target).find(daemon_->root() + "/erofs/images/"), std::string::npos)
      << MountSource(target);
  const std::string dir = MountActive("lazy", targets.back());
  auto motd = ReadFile(dir + "/etc/motd");
  ASSERT_TRUE(motd.ok()) << motd.status();
  EXPECT_EQ(*motd, "served from verified spans\n");
  auto data = ReadFile(dir + "/data.bin");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_TRUE(*data == RandomBytes(300000, 9));
}

INSTANTIATE_TEST_SUITE_P(Backends, SociErofsDaemonTest, ::testing::Values("erofs"), ParamName);

}  // namespace
}  // namespace lazypull::testing
