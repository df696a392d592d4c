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

#include "tests/remote/remote_daemon_fixture.h"

namespace lazypull::testing {
namespace {

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
    EXPECT_EQ(row[2], "estargz") << status->output;      // FORMAT
    EXPECT_EQ(row[3], BackendName()) << status->output;  // BACKEND
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
  // No layer may become local (and, on EROFS, graduate): the start prefetch of the
  // container's /bin/sh would fetch the whole busybox layer.
  ASSERT_TRUE(daemon_->Stop().ok());
  StartDaemon(DaemonConfig(GetParam(), "background_fetch = false\nelf_prefetch = false\n"));
  PushedImage image = Image("esgz");
  std::vector<std::string> targets = PrepareLazyChain(image, false, "u");
  MountList mounts;
  ASSERT_GRPC_OK(client_->Prepare("container", targets.back(), {}, &mounts));
  ASSERT_TRUE(daemon_->Stop().ok());
  proxy_.reset();  // the registry is unreachable from now on
  // A fresh cache and no kept index bytes: the TOC must come from the registry.
  ASSERT_EQ(RunShell("rm -rf " + daemon_->root() + "/cache " + daemon_->root() + "/index-bytes",
                     std::chrono::seconds(30))
                ->exit_code,
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

INSTANTIATE_TEST_SUITE_P(Backends, RemoteDaemonTest,
                         ::testing::Values("fuse", "erofs", "erofs-loop"), ParamName);

}  // namespace
}  // namespace lazypull::testing
