// Remote snapshots at the daemon level (issue 5), with real parts: a docker-registry behind the
// harness fault proxy, images converted by `lazypull convert` and skopeo, the real
// lazypull-snapshotter driven over gRPC with the labels containerd's clients send, and the
// returned mounts mounted for real.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fetcher/format/format_detector.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "mount/erofs/loop_device.h"
#include "nlohmann/json.hpp"
#include "tests/format/test_blob_builder.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/daemon_fixture.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

constexpr char kFetchTimeout[] = "4s";
// After the [mount] section's backend line (see DaemonConfig).
constexpr char kDaemonConfig[] = R"(
fetch_timeout = "4s"
[registry]
max_retries = 1
initial_backoff_ms = 100
max_backoff_ms = 200
request_timeout_ms = 3000
total_timeout_ms = 3000
[remote]
status_interval_ms = 200
)";

// The daemon config of every test, with the [mount] backend under test ("fuse", "erofs", or
// "erofs-loop": EROFS through loop devices, as on kernels before 6.12), background fetch off
// unless `mount_extra` sets it.
std::string DaemonConfig(const std::string& backend,
                         const std::string& mount_extra = "background_fetch = false\n") {
  if (backend == "erofs-loop") {
    return absl::StrCat("[mount]\nbackend = \"erofs\"\nerofs_attach = \"loop\"\n", mount_extra,
                        kDaemonConfig);
  }
  return absl::StrCat("[mount]\nbackend = \"", backend, "\"\n", mount_extra, kDaemonConfig);
}

// Bound loop devices of the daemon whose root is `root`: tagged with its EROFS dir's owner tag,
// or backed by a file under the root.
size_t DaemonLoopDevices(const std::string& root) {
  const std::string owner = mount::erofs::LoopOwnerTag(root + "/erofs");
  size_t n = 0;
  for (const auto& d : mount::erofs::ListLoopDevices()) {
    n += mount::erofs::IsOwnedLoopDevice(d, owner) || d.backing_file.rfind(root + "/", 0) == 0;
  }
  return n;
}

// Built once per test binary (see RemoteTestImages).
RemoteTestImages* images = nullptr;
// Built on first use: one layer with a file over 4 GiB (BuildHugeSparseLayout), as
// huge-esgz:v1 and huge-zc:v1.
absl::Status huge_status = absl::UnknownError("not built");
bool huge_built = false;

// Sum of the bytes of the blob range requests for `digest_hex` that went through the proxy;
// a blob GET without Range counts as "whole" (sets *unranged).
uint64_t RangeBytes(const std::vector<RecordedRequest>& requests, const std::string& digest_hex,
                    bool* unranged) {
  uint64_t total = 0;
  for (const RecordedRequest& r : requests) {
    if (r.method != "GET" || !absl::StrContains(r.target, digest_hex)) continue;
    auto it = r.headers.find("range");
    if (it == r.headers.end()) {
      *unranged = true;
      continue;
    }
    absl::string_view v = it->second;
    if (!absl::ConsumePrefix(&v, "bytes=")) continue;
    for (absl::string_view part : absl::StrSplit(v, ',')) {
      std::vector<std::string> ab = absl::StrSplit(part, '-');
      uint64_t a = 0, b = 0;
      if (ab.size() == 2 && absl::SimpleAtoi(ab[0], &a) && absl::SimpleAtoi(ab[1], &b)) {
        total += b - a + 1;
      }
    }
  }
  return total;
}

// The row of `lazypull status`'s table whose LAYER column is `short_digest`, split into its
// columns (SNAP LAYER FORMAT BACKEND GRADUATED FETCHED LOCAL% CACHE_HITS BACKGROUND REF);
// empty if no row has it.
std::vector<std::string> StatusTableRow(const std::string& output,
                                        const std::string& short_digest) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (cols.size() >= 9 && cols[1] == short_digest) return cols;
  }
  return {};
}

// Whether `path` is a mount point of type `fstype` in this process's mount namespace.
bool IsMountOfType(const std::string& path, const std::string& fstype) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() < 10 || f[4] != path) continue;
    for (size_t i = 6; i + 1 < f.size(); ++i) {
      if (f[i] == "-") {
        if (f[i + 1] == fstype) return true;
        break;
      }
    }
  }
  return false;
}

// Reads a whole file with read(2); the errno of the first failing read, or 0.
int ReadErrno(const std::string& path, std::string* out = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[65536];
  int err = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    if (out != nullptr) out->append(buf, n);
  }
  ::close(fd);
  return err;
}

// Every test runs on both backends (the parameter is the [mount] backend).
class RemoteDaemonTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    images = new RemoteTestImages;
    images->status = BuildRemoteTestImages(*images);
  }
  static void TearDownTestSuite() {
    delete images;
    images = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(images->status.ok()) << images->status;
    auto proxy = FaultProxy::Start(images->registry->port());
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = std::move(*proxy);
    StartDaemon(DaemonConfig(GetParam()));
  }
  // The mount type of a lazy layer on the backend under test.
  std::string LazyFsType() const { return GetParam() == "fuse" ? "fuse.lazypull" : "erofs"; }
  // Builds the >4 GiB image once (it takes a while, so only when a test needs it).
  static absl::Status EnsureHugeImage() {
    if (huge_built) return huge_status;
    huge_built = true;
    absl::StatusOr<std::string> layout = BuildHugeSparseLayout(images->dir.path());
    huge_status = layout.status();
    const std::string host = images->registry->host();
    if (huge_status.ok()) huge_status = images->registry->PushOciLayout(*layout, "v1", "huge:v1");
    if (huge_status.ok()) {
      huge_status = LazypullConvert("estargz", host + "/huge:v1", host + "/huge-esgz:v1");
    }
    if (huge_status.ok()) {
      huge_status = LazypullConvert("zstd:chunked", host + "/huge:v1", host + "/huge-zc:v1");
    }
    return huge_status;
  }
  void TearDown() override {
    mounts_.clear();
    client_.reset();
    std::string root;
    if (daemon_ != nullptr) {
      root = daemon_->root();
      absl::Status s = daemon_->Stop();
      EXPECT_TRUE(s.ok()) << s;
    }
    // Every loop device goes with its mount (the daemon unmounted them; the ones a killed
    // daemon left went when the next one detached their mounts): none is left.
    if (!root.empty()) {
      EXPECT_TRUE(WaitUntil([&] { return DaemonLoopDevices(root) == 0; }))
          << DaemonLoopDevices(root) << " loop devices of the daemon are left";
    }
    if (daemon_ != nullptr && HasFailure()) {
      std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
    }
    daemon_.reset();
  }

  void StartDaemon(const std::string& toml) {
    SnapshotterOptions options;
    options.config_toml = toml;
    options.log_level = "debug";
    auto d = SnapshotterProcess::Start(tmp_.path(), options);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  }

  // The image `repo:v1` as seen through the fault proxy.
  PushedImage Image(const std::string& repo) {
    auto image = ResolvePushed(proxy_->host() + "/" + repo + ":v1");
    EXPECT_TRUE(image.ok()) << image.status();
    return image.ok() ? *image : PushedImage{};
  }

  // Prepares every layer of `image` with remote labels; each must answer ALREADY_EXISTS.
  // Returns the committed target names, base layer first.
  std::vector<std::string> PrepareLazyChain(const PushedImage& image, bool cri,
                                            const std::string& prefix) {
    std::vector<std::string> targets;
    std::string parent;
    for (size_t i = 0; i < image.resolved.manifest.layers.size(); ++i) {
      std::string target = absl::StrCat(prefix, "-layer-", i);
      auto labels = cri ? CriLabels(image, i, target) : StargzLabels(image, i, target);
      grpc::Status s = client_->Prepare(absl::StrCat(prefix, "-extract-", i), parent, labels);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS)
          << "layer " << i << ": " << s.error_message();
      targets.push_back(target);
      parent = target;
    }
    return targets;
  }

  // Prepares an active snapshot on `parent` and mounts it at work/<name>.
  std::string MountActive(const std::string& name, const std::string& parent,
                          MountList* mounts_out = nullptr) {
    MountList mounts;
    grpc::Status s = client_->Prepare(name, parent, {}, &mounts);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return MountExisting(name, mounts, mounts_out);
  }
  std::string MountExisting(const std::string& name, const MountList& mounts,
                            MountList* mounts_out = nullptr) {
    std::string dir = tmp_.Sub("mnt-" + name);
    ::mkdir(dir.c_str(), 0755);
    auto m = ScopedMount::Mount(mounts, dir);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) mounts_.push_back(std::move(*m));
    if (mounts_out != nullptr) *mounts_out = mounts;
    return dir;
  }

  nlohmann::json Status() {
    auto text = ReadFile(daemon_->root() + "/status.json");
    if (!text.ok()) return nlohmann::json::object();
    return nlohmann::json::parse(*text, nullptr, false);
  }
  // Waits until status.json lists `n` mounted layers.
  bool WaitMountedLayers(size_t n) {
    return WaitUntil([&] {
      nlohmann::json st = Status();
      return st.is_object() && st.contains("layers") && st["layers"].size() == n;
    });
  }
  // The entry of layer `digest` under status.json's "layers" (null if not listed).
  nlohmann::json StatusLayer(const Digest& digest) {
    nlohmann::json st = Status();
    if (!st.is_object() || !st.contains("layers")) return nullptr;
    for (const auto& l : st["layers"]) {
      if (l.value("digest", "") == digest.ToString()) return l;
    }
    return nullptr;
  }

  void ExpectImageTree(const std::string& dir) {
    std::vector<std::string> diffs = CompareTrees(images->rootfs, dir);
    EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  }

  TempDir tmp_{"lpr"};
  std::unique_ptr<FaultProxy> proxy_;
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
  std::vector<std::unique_ptr<ScopedMount>> mounts_;
};

// (a) stargz labels, eStargz from `lazypull convert`: ALREADY_EXISTS, committed target with the
// marker and the right parent, overlay lowerdirs are the FUSE mounts, exact tree.
TEST_P(RemoteDaemonTest, EstargzWithStargzLabelsMountsExactImageTree) {
  PushedImage image = Image("esgz");
  ASSERT_EQ(image.resolved.manifest.layers.size(), 4u);
  std::vector<std::string> targets = PrepareLazyChain(image, /*cri=*/false, "e");
  for (size_t i = 0; i < targets.size(); ++i) {
    snapshots_v1::Info info;
    ASSERT_GRPC_OK(client_->Stat(targets[i], &info));
    EXPECT_EQ(info.kind(), snapshots_v1::COMMITTED);
    EXPECT_EQ(info.parent(), i == 0 ? "" : targets[i - 1]);
    EXPECT_TRUE(info.labels().contains("containerd.io/snapshot/remote")) << targets[i];
    EXPECT_EQ(info.labels().at("containerd.io/snapshot.ref"), targets[i]);
    // What containerd's metadata layer does after ALREADY_EXISTS.
    std::vector<snapshots_v1::Info> found;
    std::string filter = absl::StrCat("labels.\"containerd.io/snapshot.ref\"==", targets[i]);
    if (i > 0) absl::StrAppend(&filter, ",parent==", targets[i - 1]);
    ASSERT_GRPC_OK(client_->List({filter}, &found));
    ASSERT_EQ(found.size(), 1u) << filter;
    EXPECT_EQ(found[0].name(), targets[i]);
  }
  MountList mounts;
  std::string dir = MountActive("container", targets.back(), &mounts);
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "overlay");
  std::vector<std::string> lowerdirs;
  for (const std::string& opt : mounts[0].options()) {
    if (absl::StartsWith(opt, "lowerdir=")) lowerdirs = absl::StrSplit(opt.substr(9), ':');
  }
  ASSERT_EQ(lowerdirs.size(), 4u);
  for (const std::string& lower : lowerdirs) {
    EXPECT_TRUE(IsMountOfType(lower, LazyFsType())) << lower;
  }
  ExpectImageTree(dir);
  // The opaque directory of layer 4 hides everything below it.
  EXPECT_EQ(ListDir(dir + "/old"), std::vector<std::string>{"after-opaque.txt"});
  EXPECT_TRUE(WaitMountedLayers(4));
  // `lazypull status` shows the layers.
  auto status = RunCommand({BinaryDir() + "/bin/lazypull", "status", "--root", daemon_->root()},
                           std::chrono::seconds(30));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->exit_code, 0) << status->output;
  for (const oci::Descriptor& layer : image.resolved.manifest.layers) {
    std::vector<std::string> row = StatusTableRow(status->output, layer.digest.hex().substr(0, 12));
    ASSERT_FALSE(row.empty()) << layer.digest.ToString() << " is not listed:\n" << status->output;
    EXPECT_EQ(row[2], "estargz") << status->output;   // FORMAT
    EXPECT_EQ(row[3], GetParam()) << status->output;  // BACKEND
  }
}

// Requests for blob `digest_hex` among `requests` (GETs through the proxy).
size_t BlobGets(const std::vector<RecordedRequest>& requests, const std::string& digest_hex) {
  size_t n = 0;
  for (const RecordedRequest& r : requests) {
    if (r.method == "GET" && absl::StrContains(r.target, digest_hex)) ++n;
  }
  return n;
}

// The first Prepare of an image opens every other lazy layer's index in parallel (each in ONE
// request: footer and TOC in the speculative tail), so the later Prepares only mount.
TEST_P(RemoteDaemonTest, FirstPrepareOpensTheOtherLayersIndexesInParallel) {
  PushedImage image = Image("esgz");
  const auto& layers = image.resolved.manifest.layers;
  ASSERT_EQ(layers.size(), 4u);
  proxy_->ClearRequests();
  grpc::Status s = client_->Prepare("p-extract-0", "", StargzLabels(image, 0, "p-layer-0"));
  ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  // Wait (bounded) until every other layer's index has been fetched.
  bool all = WaitUntil([&] {
    std::vector<RecordedRequest> seen = proxy_->Requests();
    for (size_t l = 1; l < layers.size(); ++l) {
      if (BlobGets(seen, layers[l].digest.hex()) == 0) return false;
    }
    return true;
  });
  ASSERT_TRUE(all) << "indexes of layers 1-3 were not fetched after the first Prepare";
  std::vector<RecordedRequest> before = proxy_->Requests();
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_EQ(BlobGets(before, layers[l].digest.hex()), 1u) << "layer " << l;
  }
  std::string parent = "p-layer-0";
  for (size_t l = 1; l < layers.size(); ++l) {
    std::string target = absl::StrCat("p-layer-", l);
    s = client_->Prepare(absl::StrCat("p-extract-", l), parent, StargzLabels(image, l, target));
    ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
    parent = target;
  }
  std::vector<RecordedRequest> after = proxy_->Requests();
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_EQ(BlobGets(after, layers[l].digest.hex()), 1u) << "layer " << l << " fetched again";
  }
  ExpectImageTree(MountActive("preloaded", parent));
}

// (a) CRI labels, zstd:chunked from `lazypull convert`: the annotations come from the manifest.
TEST_P(RemoteDaemonTest, ZstdChunkedWithCriLabelsMountsExactImageTree) {
  PushedImage image = Image("zc");
  std::vector<std::string> targets = PrepareLazyChain(image, /*cri=*/true, "z");
  ExpectImageTree(MountActive("container", targets.back()));
}

// (a) zstd:chunked written by skopeo 1.9 (older variant), stargz labels (none of its
// annotations arrive as labels).
TEST_P(RemoteDaemonTest, SkopeoZstdChunkedMountsExactImageTree) {
  PushedImage image = Image("skopeo-zc");
  ASSERT_EQ(image.resolved.manifest.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+zstd");
  std::vector<std::string> targets = PrepareLazyChain(image, /*cri=*/false, "s");
  ExpectImageTree(MountActive("container", targets.back()));
}

// (c) Laziness: Prepare fetches at most TOC + footer + prioritized range; reading one 1 MiB
// file fetches at most its chunks plus merge slack.
TEST_P(RemoteDaemonTest, FetchesOnlyTocThenOnlyTheChunksRead) {
  PushedImage image = Image("esgz");
  const oci::Descriptor& layer = image.resolved.manifest.layers[1];  // BigFilesLayer
  // The layer's index, built locally from the whole blob, gives the exact bounds.
  auto direct = ResolvePushed(images->registry->host() + "/esgz:v1");
  ASSERT_TRUE(direct.ok());
  registry::RegistryClient rc(registry::RegistryConfig{}, registry::NewCurlTransport());
  auto ref = registry::ParseReference(direct->ref);
  ASSERT_TRUE(ref.ok());
  auto blob = rc.FetchBlob(*ref, layer);
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto reader = NewStringBlobReader(*blob);
  auto index = format::OpenLayerIndex(*reader, layer.media_type, layer.annotations);
  ASSERT_TRUE(index.ok()) << index.status();
  const uint64_t toc_and_footer = index->blob_size() - index->data_range().length;
  const uint64_t prefetch = index->prefetch_range() ? index->prefetch_range()->length : 0;

  proxy_->ClearRequests();
  std::vector<std::string> targets = PrepareLazyChain(image, false, "l");
  std::string dir = MountActive("container", targets.back());
  ASSERT_TRUE(WaitMountedLayers(4));
  // Prefetch (if any) settles: no layer's prefetch is still pending or running.
  ASSERT_TRUE(WaitUntil([&] {
    for (const auto& l : Status()["layers"]) {
      const std::string p = l.value("prefetch", "");
      if (p == "pending" || p == "running") return false;
    }
    return true;
  })) << Status().dump();
  bool unranged = false;
  uint64_t after_prepare = RangeBytes(proxy_->Requests(), layer.digest.hex(), &unranged);
  EXPECT_FALSE(unranged);
  // The index is opened with one speculative tail request (1/32 of the blob, 16-512 KiB)
  // instead of footer-then-TOC: at most that, or the TOC and footer when larger.
  const uint64_t tail = std::max<uint64_t>(
      toc_and_footer, std::min<uint64_t>(format::FormatReadOptions{}.speculative_tail_bytes,
                                         std::max<uint64_t>(16 << 10, layer.size / 32)));
  const uint64_t footer_slack = 64 << 10;
  EXPECT_LE(after_prepare, tail + prefetch + footer_slack)
      << "toc+footer " << toc_and_footer << " prefetch " << prefetch;
  EXPECT_LT(after_prepare, layer.size / 2) << "Prepare fetched most of the layer";

  proxy_->ClearRequests();
  std::string content;
  ASSERT_EQ(ReadErrno(dir + "/data/big.bin", &content), 0);
  EXPECT_EQ(content, RandomBytes(1 << 20, 1));
  uint64_t chunk_bytes = 0;
  auto ino = index->LookupPath("data/big.bin");
  ASSERT_TRUE(ino.has_value());
  for (const format::Chunk& c : index->Chunks(*ino)) chunk_bytes += c.compressed_length;
  // Merge gaps plus the cross-file readahead window that follows the file in blob order.
  const uint64_t merge_slack = 2 * (64 << 10) + LayerReaderOptions{}.readahead_window;
  uint64_t read_bytes = RangeBytes(proxy_->Requests(), layer.digest.hex(), &unranged);
  EXPECT_FALSE(unranged);
  EXPECT_GE(read_bytes, chunk_bytes / 2) << "the file's chunks were not fetched?";
  EXPECT_LE(read_bytes, chunk_bytes + merge_slack) << "chunks of big.bin: " << chunk_bytes;
  EXPECT_LT(read_bytes + after_prepare, layer.size) << "the whole layer was fetched";
  // status.json is rewritten (every status_interval) and then counts big.bin's bytes as local.
  ASSERT_TRUE(WaitUntil([&] {
    nlohmann::json l = StatusLayer(layer.digest);
    return l.is_object() && l.value("local_bytes", 0ull) >= content.size();
  })) << Status().dump();
  nlohmann::json l = StatusLayer(layer.digest);
  EXPECT_GT(l.value("bytes_fetched", 0ull), 0ull);
  EXPECT_LT(l.value("fetched_percent", 100.0), 100.0);
}

// (d) Integrity: a flipped byte in a chunk → EIO, logged with layer and chunk; nothing bad is
// served or cached: once the registry is healthy the exact bytes come back.
TEST_P(RemoteDaemonTest, CorruptChunkReadsFailWithEioAndAreNeverCached) {
  PushedImage image = Image("esgz");
  const oci::Descriptor& layer = image.resolved.manifest.layers[1];
  std::vector<std::string> targets = PrepareLazyChain(image, false, "c");
  std::string dir = MountActive("container", targets.back());
  FaultRule corrupt;
  corrupt.kind = FaultKind::kCorruptByte;
  corrupt.method = "GET";
  corrupt.path_contains = layer.digest.hex();
  corrupt.times = -1;
  proxy_->AddRule(corrupt);
  EXPECT_EQ(ReadErrno(dir + "/data/big.bin"), EIO);
  EXPECT_GT(proxy_->faults_applied(), 0);
  std::string log = daemon_->ReadLog();
  bool logged = false;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, layer.digest.ToString()) && absl::StrContains(line, "chunk") &&
        (absl::StrContains(line, "data/big.bin") ||
         absl::StrContains(line, "data/big-hardlink"))) {  // the inode's first name
      logged = true;
    }
  }
  EXPECT_TRUE(logged) << "no log line names the layer, the file and the chunk";
  proxy_->ClearRules();
  // The kernel's readahead READs of the failed read() may still be fetching through the fault
  // when the rule is cleared; a read joining such a fetch shares its EIO. Retry only this
  // step, until those fetches have ended (bounded).
  std::string content;
  EXPECT_TRUE(WaitUntil([&] {
    content.clear();
    return ReadErrno(dir + "/data/big.bin", &content) == 0;
  }));
  EXPECT_EQ(content, RandomBytes(1 << 20, 1));
}

// (e) kill -9 with an overlay mounted, restart: fresh mounts read the image; then a clean
// restart re-mounts every remote snapshot.
TEST_P(RemoteDaemonTest, RestartAfterKillAndCleanRestartRemountLayers) {
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "r");
  MountList mounts;
  std::string dir = MountActive("container", targets.back(), &mounts);
  std::string greeting;
  ASSERT_EQ(ReadErrno(dir + "/etc/greeting", &greeting), 0);
  EXPECT_EQ(greeting, "hello from the lazy layer\n");

  if (GetParam() == "erofs-loop") {
    EXPECT_EQ(DaemonLoopDevices(daemon_->root()), 8u) << "two per EROFS layer mount";
  }
  daemon_->Kill();
  mounts_.clear();  // the old overlay (its FUSE lowerdirs are dead now)
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ASSERT_TRUE(WaitMountedLayers(4)) << Status().dump();
  MountList fresh;
  ASSERT_GRPC_OK(client_->Mounts("container", &fresh));
  ExpectImageTree(MountExisting("after-kill", fresh));

  mounts_.clear();
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();  // SIGTERM, then start
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  EXPECT_TRUE(absl::StrContains(daemon_->ReadLog(), "\"msg\":\"remote layers restored\""));
  ASSERT_TRUE(WaitMountedLayers(4)) << Status().dump();
  ASSERT_GRPC_OK(client_->Mounts("container", &fresh));
  ExpectImageTree(MountExisting("after-restart", fresh));
}

// A remote layer that cannot be re-mounted (registry gone) → Mounts of its children answer
// UNAVAILABLE; with fail_on_restore_error the daemon refuses to start.
TEST_P(RemoteDaemonTest, UnrestorableLayerMakesMountsUnavailable) {
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "u");
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("container", targets.back(), {}, &mounts));
  ASSERT_TRUE(daemon_->Stop().ok());
  proxy_.reset();  // the registry is unreachable from now on
  // A fresh cache: the TOC must come from the registry.
  ASSERT_EQ(RunShell("rm -rf " + daemon_->root() + "/cache", std::chrono::seconds(30))->exit_code,
            0);
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  EXPECT_GRPC_CODE(client_->Mounts("container", &mounts), grpc::StatusCode::UNAVAILABLE);
  nlohmann::json st = Status();
  EXPECT_EQ(st["unavailable"].size(), 4u) << st.dump();
  ASSERT_TRUE(daemon_->Stop().ok());

  ASSERT_TRUE(WriteFile(tmp_.Sub("strict.toml"),
                        DaemonConfig(GetParam()) + "fail_on_restore_error = true\n")
                  .ok());
  auto r = RunCommand(
      {BinaryDir() + "/bin/lazypull-snapshotter", "--root", daemon_->root(), "--address",
       tmp_.Sub("strict.sock"), "--config", tmp_.Sub("strict.toml"), "--metrics-address", ""},
      std::chrono::seconds(60));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1) << r->output;
  EXPECT_TRUE(absl::StrContains(r->output, "fail_on_restore_error")) << r->output;
  daemon_.reset();
}

// (f) A plain gzip layer is not lazy-servable: Prepare falls back to a normal active snapshot
// (containerd unpacks it), and it commits like any other.
TEST_P(RemoteDaemonTest, PlainGzipLayerFallsBackToNormalSnapshot) {
  PushedImage image = Image("src");
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("extract-0", "", StargzLabels(image, 0, "gz-layer-0"), &mounts));
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "bind");
  std::string dir = MountExisting("extract-0", mounts);
  ASSERT_TRUE(WriteFile(dir + "/unpacked-by-containerd", "x").ok());
  mounts_.clear();
  ASSERT_GRPC_OK(client_->Commit("gz-layer-0", "extract-0"));
  snapshots_v1::Info info;
  ASSERT_GRPC_OK(client_->Stat("gz-layer-0", &info));
  EXPECT_FALSE(info.labels().contains("containerd.io/snapshot/remote"));
  std::string log = daemon_->ReadLog();
  EXPECT_TRUE(absl::StrContains(log, "\"level\":\"info\"") &&
              absl::StrContains(log, "not lazily mountable"))
      << log;
  std::string view = MountActive("on-top", "gz-layer-0");
  auto content = ReadFile(view + "/unpacked-by-containerd");
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "x");
}

// (g) Registry gone after mount: cached files still read; uncached reads fail with EIO within
// the configured fetch timeout.
TEST_P(RemoteDaemonTest, RegistryGoneCachedReadsWorkUncachedFailFast) {
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "g");
  std::string dir = MountActive("container", targets.back());
  std::string greeting;
  ASSERT_EQ(ReadErrno(dir + "/etc/greeting", &greeting), 0);
  proxy_.reset();
  std::string again;
  EXPECT_EQ(ReadErrno(dir + "/etc/greeting", &again), 0);
  EXPECT_EQ(again, greeting);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(ReadErrno(dir + "/data/other.bin"), EIO);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(4 + 6)) << "fetch_timeout is " << kFetchTimeout;
}

}  // namespace
}  // namespace lazypull::testing

namespace lazypull::testing {
namespace {

// A file over 4 GiB (zeros but for markers): its size, and reads at the start, across the
// 4 GiB mark and at the end, on eStargz and zstd:chunked.
TEST_P(RemoteDaemonTest, FileOverFourGiBReadsAcrossTheBoundary) {
  ASSERT_TRUE(EnsureHugeImage().ok()) << huge_status;
  for (const char* repo : {"huge-esgz", "huge-zc"}) {
    SCOPED_TRACE(repo);
    PushedImage image = Image(repo);
    std::vector<std::string> targets = PrepareLazyChain(image, /*cri=*/false, repo);
    std::string dir = MountActive(std::string(repo) + "-c", targets.back());
    const std::string path = dir + "/big/huge.bin";
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), kHugeSize);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    for (uint64_t offset :
         std::initializer_list<uint64_t>{0, (4ull << 30) - 4096, kHugeSize - 8192}) {
      std::string got(8192, '\0');
      ASSERT_EQ(::pread(fd, got.data(), got.size(), static_cast<off_t>(offset)), 8192)
          << "offset " << offset << ": " << strerror(errno);
      EXPECT_TRUE(got == HugeBytes(offset, got.size())) << "offset " << offset;
    }
    ::close(fd);
  }
}

// The containerd.io/snapshot/lazypull.backend label picks the other backend for one chain.
TEST_P(RemoteDaemonTest, BackendLabelOverridesTheDefault) {
  const std::string other = GetParam() == "fuse" ? "erofs" : "fuse";
  PushedImage image = Image("zc");
  std::string parent;
  std::vector<std::string> targets;
  for (size_t i = 0; i < image.resolved.manifest.layers.size(); ++i) {
    std::string target = absl::StrCat("o-layer-", i);
    auto labels = CriLabels(image, i, target);
    labels["containerd.io/snapshot/lazypull.backend"] = other;
    ASSERT_EQ(client_->Prepare(absl::StrCat("o-extract-", i), parent, labels).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
    targets.push_back(target);
    parent = target;
  }
  MountList mounts;
  std::string dir = MountActive("container", targets.back(), &mounts);
  for (const std::string& opt : mounts[0].options()) {
    if (!absl::StartsWith(opt, "lowerdir=")) continue;
    for (absl::string_view lower : absl::StrSplit(opt.substr(9), ':')) {
      EXPECT_TRUE(IsMountOfType(std::string(lower), other == "erofs" ? "erofs" : "fuse.lazypull"))
          << lower;
    }
  }
  ExpectImageTree(dir);
  ASSERT_TRUE(WaitMountedLayers(4));
  for (const auto& l : Status()["layers"]) EXPECT_EQ(l.value("backend", ""), other) << l.dump();
}

// Issue 17 (1): an image author's TOC gives two files (4 KiB and 64 KiB) one chunkDigest. The
// index refuses it, the layer falls back to a normal snapshot with one log line naming why, and
// the daemon goes on serving lazy layers (it used to die reading both files at once).
TEST_P(RemoteDaemonTest, TocWithOneDigestAtTwoLengthsFallsBackAndTheDaemonLives) {
  format::testing::TestEntry small, large;
  small.name = "hostile/small";
  small.data = std::string(4096, 's');
  large.name = "hostile/large";
  large.data = std::string(65536, 'L');
  format::testing::BuiltBlob built =
      format::testing::BuildEstargz({small, large}, {.mutate_toc = [](nlohmann::json& toc) {
                                      std::string first;
                                      for (auto& e : toc["entries"]) {
                                        if (!e.contains("chunkDigest")) continue;
                                        if (first.empty()) {
                                          first = e["chunkDigest"];
                                        } else {
                                          e["chunkDigest"] = first;
                                        }
                                      }
                                    }});
  const std::string layout = tmp_.Sub("hostile-layout");
  ASSERT_TRUE(WriteOneLayerLayout(layout, built.blob, built.annotations).ok());
  ASSERT_TRUE(images->registry->PushOciLayout(layout, "v1", "hostile:v1").ok());
  PushedImage image = Image("hostile");
  MountList mounts;
  ASSERT_GRPC_OK(
      client_->Prepare("hostile-extract", "", StargzLabels(image, 0, "hostile-0"), &mounts));
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].type(), "bind");
  std::string log = daemon_->ReadLog();
  EXPECT_TRUE(absl::StrContains(log, "not lazily mountable") &&
              absl::StrContains(log, "another chunk has the same digest with length 4096"))
      << log;
  // Still serving: a good image mounts lazily and reads exactly.
  std::vector<std::string> targets = PrepareLazyChain(Image("esgz"), false, "after");
  ExpectImageTree(MountActive("container", targets.back()));
}

std::string BackendName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param == "erofs-loop" ? "erofs_loop" : info.param;
}
INSTANTIATE_TEST_SUITE_P(Backends, RemoteDaemonTest,
                         ::testing::Values("fuse", "erofs", "erofs-loop"), BackendName);

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
  ASSERT_EQ(RunShell("rm -rf " + daemon_->root() + "/cache", std::chrono::seconds(30))->exit_code,
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
                         BackendName);

}  // namespace
}  // namespace lazypull::testing
