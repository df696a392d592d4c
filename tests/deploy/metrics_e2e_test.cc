// The daemon's /metrics during a real lazy pull (issue 11): a real docker-registry, an image
// converted by `lazypull convert`, the real lazypull-snapshotter driven over gRPC with CRI's
// labels, the returned overlay mounted and read. Scrapes before, during and after show the
// values moving as they must: RPC counts equal the calls made, bytes fetched > 0 after the
// first read, chunk-cache hits (and no new fetch) after a re-read; promtool accepts the text.
// Also: a metrics port in use fails the daemon's start with a clear message. Both backends.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/deploy/prom_text.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

constexpr size_t kBigSize = 3 << 20;

struct Images {
  TempDir dir{"lpme"};
  std::unique_ptr<RegistryProcess> registry;
  std::string ref;  // the eStargz image
  absl::Status status;
};
Images* images = nullptr;

absl::Status BuildImages(Images& im) {
  auto registry = RegistryProcess::Start(im.dir.Sub("registry"));
  if (!registry.ok()) return registry.status();
  im.registry = std::move(*registry);
  ImageBuilder b(im.dir.Sub("image"));
  LayerChanges c;
  c.files = {{.path = "/data/big.bin", .content = RandomBytes(kBigSize, 11)},
             {.path = "/data/small.txt", .content = "small\n"}};
  b.AddLayer(c);
  auto built = b.Build("v1");
  if (!built.ok()) return built.status();
  if (absl::Status s = im.registry->PushOciLayout(built->layout_dir, "v1", "src:v1"); !s.ok()) {
    return s;
  }
  im.ref = im.registry->host() + "/esgz:v1";
  // 1 MiB chunks: the big file is several chunks, each fetched (and later hit) separately.
  return LazypullConvert("estargz", im.registry->host() + "/src:v1", im.ref,
                         "--chunk-size 1048576");
}

// Reads `path` after dropping its pages from the page cache, so the read reaches lazypull.
absl::StatusOr<std::string> ReadUncached(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      ::close(fd);
      return absl::ErrnoToStatus(errno, "read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

class MetricsE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    images = new Images;
    images->status = BuildImages(*images);
  }
  static void TearDownTestSuite() {
    delete images;
    images = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(images->status.ok()) << images->status; }
  void TearDown() override {
    mounts_.clear();
    client_.reset();
    if (daemon_ != nullptr) {
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
      EXPECT_EQ(daemon_->Stop(), absl::OkStatus());
    }
  }

  // Starts the daemon with metrics at a free port; returns the metrics address ("" on error).
  std::string StartDaemon() {
    const std::string address = absl::StrCat("127.0.0.1:", PickFreePort());
    SnapshotterOptions options;
    options.metrics_address = address;
    options.log_level = "info";
    // Without FUSE passthrough: a re-read of a local file is then served by the daemon from
    // its chunk cache, which the metrics below count (passthrough: fuse_passthrough_test).
    options.config_toml = absl::StrCat(
        "[mount]\nbackend = \"", GetParam(), "\"\nprefetch = false\nbackground_fetch = false\n",
        "fuse_passthrough = false\nfetch_timeout = \"5s\"\n[registry]\nmax_retries = 1\n",
        "initial_backoff_ms = 50\n");
    auto d = SnapshotterProcess::Start(tmp_.path(), options);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return "";
    daemon_ = std::move(*d);
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
    return address;
  }

  TempDir tmp_{"lpmet"};
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
  std::vector<std::unique_ptr<ScopedMount>> mounts_;
};

TEST_P(MetricsE2eTest, ValuesMoveDuringALazyPull) {
  const std::string address = StartDaemon();
  ASSERT_FALSE(address.empty());

  auto s0 = Scrape(address);
  ASSERT_TRUE(s0.ok()) << s0.status();
  EXPECT_EQ(s0->Sum("lazypull_build_info"), 1);
  EXPECT_EQ(s0->Sum("lazypull_snapshot_requests_total"), 0);
  EXPECT_EQ(s0->Sum("lazypull_registry_requests_total"), 0);
  EXPECT_EQ(s0->Sum("lazypull_fetched_bytes_total"), 0);

  // The Kubernetes path's Prepare (CRI labels): mounted lazily → ALREADY_EXISTS.
  auto image = ResolvePushed(images->ref);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->resolved.manifest.layers.size(), 1u);
  const std::string digest = image->resolved.manifest.layers[0].digest.ToString();
  EXPECT_EQ(client_->Prepare("extract-0", "", CriLabels(*image, 0, "layer-0")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  MountList mounts;
  ASSERT_TRUE(client_->Prepare("container", "layer-0", {}, &mounts).ok());
  snapshots_v1::Info info;
  ASSERT_TRUE(client_->Stat("layer-0", &info).ok());
  EXPECT_EQ(client_->Stat("no-such-snapshot", &info).error_code(), grpc::StatusCode::NOT_FOUND);

  auto s1 = Scrape(address);
  ASSERT_TRUE(s1.ok()) << s1.status();
  // RPC counts match the calls made, errors by code.
  EXPECT_EQ(s1->Sum("lazypull_snapshot_requests_total", {{"method", "Prepare"}}), 2);
  EXPECT_EQ(s1->Sum("lazypull_snapshot_requests_total", {{"method", "Stat"}}), 2);
  EXPECT_EQ(s1->Sum("lazypull_snapshot_requests_total"), 4);
  EXPECT_EQ(s1->Sum("lazypull_snapshot_request_errors_total",
                    {{"method", "Prepare"}, {"code", "ALREADY_EXISTS"}}),
            1);
  EXPECT_EQ(s1->Sum("lazypull_snapshot_request_errors_total",
                    {{"method", "Stat"}, {"code", "NOT_FOUND"}}),
            1);
  EXPECT_EQ(s1->Sum("lazypull_snapshot_request_duration_seconds_count", {{"method", "Prepare"}}),
            2);
  // The manifest and the TOC came from the registry; the layer is mounted, nothing read yet.
  EXPECT_GE(s1->Sum("lazypull_registry_requests_total", {{"status", "200"}}), 1);
  EXPECT_GE(s1->Sum("lazypull_registry_requests_total", {{"status", "206"}}), 1);
  EXPECT_EQ(s1->Sum("lazypull_registry_request_duration_seconds_count"),
            s1->Sum("lazypull_registry_requests_total"));
  EXPECT_GT(s1->Sum("lazypull_registry_received_bytes_total"), 0);
  EXPECT_EQ(s1->Sum("lazypull_layer_info",
                    {{"layer", digest}, {"backend", GetParam()}, {"format", "estargz"}}),
            1);
  EXPECT_EQ(s1->Sum("lazypull_mounted_layers", {{"backend", GetParam()}}), 1);
  EXPECT_EQ(s1->Sum("lazypull_layer_read_bytes_total", {{"layer", digest}}), 0);
  EXPECT_LT(s1->Sum("lazypull_layer_fetched_ratio", {{"layer", digest}}), 0.5);
  EXPECT_EQ(s1->Sum("lazypull_layer_size_bytes", {{"layer", digest}}), kBigSize + 6);
  EXPECT_EQ(s1->Sum("lazypull_background_fetch_layers", {{"state", "off"}}), 1);

  // First read: fetched from the registry, chunk cache misses, FUSE reads.
  std::string dir = tmp_.Sub("mnt");
  ::mkdir(dir.c_str(), 0755);
  auto m = ScopedMount::Mount(mounts, dir);
  ASSERT_TRUE(m.ok()) << m.status();
  mounts_.push_back(std::move(*m));
  auto big = ReadUncached(dir + "/data/big.bin");
  ASSERT_TRUE(big.ok()) << big.status();
  ASSERT_TRUE(*big == RandomBytes(kBigSize, 11));
  const std::string fs = GetParam() == "erofs" ? "erofs_blob" : "layer";
  auto s2 = Scrape(address);
  ASSERT_TRUE(s2.ok()) << s2.status();
  const double fetched = s2->Sum("lazypull_layer_fetched_bytes_total", {{"layer", digest}});
  EXPECT_GT(fetched, 0);
  EXPECT_EQ(s2->Sum("lazypull_fetched_bytes_total"), fetched);
  EXPECT_GT(s2->Sum("lazypull_registry_requests_total", {{"status", "206"}}),
            s1->Sum("lazypull_registry_requests_total", {{"status", "206"}}));
  EXPECT_GE(s2->Sum("lazypull_registry_received_bytes_total") -
                s1->Sum("lazypull_registry_received_bytes_total"),
            fetched);
  // Every chunk read is looked up in the cache; the first misses. Whether a chunk fetched by
  // readahead is already stored when the kernel asks for it depends on timing (chunks are
  // stored off the read path), so it counts as a hit or a miss.
  EXPECT_GE(s2->Sum("lazypull_chunk_cache_misses_total"), 1);
  EXPECT_GE(
      s2->Sum("lazypull_chunk_cache_misses_total") + s2->Sum("lazypull_chunk_cache_hits_total"), 3);
  EXPECT_GE(s2->Sum("lazypull_layer_read_bytes_total", {{"layer", digest}}), kBigSize);
  EXPECT_GT(s2->Sum("lazypull_layer_fetched_ratio", {{"layer", digest}}), 0.99);
  EXPECT_GT(s2->Sum("lazypull_fuse_operations_total", {{"fs", fs}, {"op", "read"}}), 0);
  EXPECT_EQ(s2->Sum("lazypull_fuse_operation_duration_seconds_count", {{"fs", fs}, {"op", "read"}}),
            s2->Sum("lazypull_fuse_operations_total", {{"fs", fs}, {"op", "read"}}));
  EXPECT_EQ(s2->Sum("lazypull_verification_failures_total"), 0);
  // The fetched chunks are written to the cache off the read path: soon, not necessarily yet.
  EXPECT_TRUE(WaitUntil([&] {
    auto s = Scrape(address);
    return s.ok() && s->Sum("lazypull_chunk_cache_stored_bytes") >= kBigSize;
  }));

  // Re-read: served by the chunk cache, nothing new from the registry.
  const double hits_before = s2->Sum("lazypull_chunk_cache_hits_total");
  big = ReadUncached(dir + "/data/big.bin");
  ASSERT_TRUE(big.ok()) << big.status();
  ASSERT_TRUE(*big == RandomBytes(kBigSize, 11));
  auto text = ScrapeMetrics(address);
  ASSERT_TRUE(text.ok()) << text.status();
  auto s3 = ParsePromText(*text);
  ASSERT_TRUE(s3.ok()) << s3.status();
  EXPECT_GE(s3->Sum("lazypull_chunk_cache_hits_total") - hits_before, 3);
  EXPECT_GE(s3->Sum("lazypull_layer_chunk_cache_hits_total", {{"layer", digest}}), 3);
  EXPECT_EQ(s3->Sum("lazypull_layer_fetched_bytes_total", {{"layer", digest}}), fetched);
  EXPECT_EQ(s3->Sum("lazypull_registry_requests_total"),
            s2->Sum("lazypull_registry_requests_total"));
  EXPECT_GT(s3->Sum("lazypull_fuse_operations_total", {{"fs", fs}, {"op", "read"}}),
            s2->Sum("lazypull_fuse_operations_total", {{"fs", fs}, {"op", "read"}}));
  EXPECT_EQ(s3->Sum("lazypull_snapshot_requests_total"), 4);
  for (const auto& [name, type] : s3->types) {
    if (absl::StartsWith(name, "exposer_")) continue;  // prometheus-cpp's own scrape counters
    EXPECT_TRUE(absl::StartsWith(name, "lazypull_")) << name;
  }
  auto checked = PromtoolCheck(*text);
  EXPECT_TRUE(checked.ok()) << checked.status();

  // A layer released keeps counting in the node-wide totals (counters never go down).
  mounts_.clear();
  ASSERT_TRUE(client_->Remove("container").ok());
  ASSERT_TRUE(client_->Remove("layer-0").ok());
  auto s4 = Scrape(address);
  ASSERT_TRUE(s4.ok()) << s4.status();
  EXPECT_FALSE(s4->Has("lazypull_layer_info", {{"layer", digest}}));
  EXPECT_EQ(s4->Sum("lazypull_fetched_bytes_total"), fetched);
  EXPECT_EQ(s4->Sum("lazypull_mounted_layers"), 0);
}

TEST_P(MetricsE2eTest, MetricsPortInUseFailsTheStart) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(sa);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(sa.sin_port));
  ASSERT_TRUE(WriteFile(tmp_.Sub("config.toml"),
                        absl::StrCat("[mount]\nbackend = \"", GetParam(),
                                     "\"\n[metrics]\naddress = \"", address, "\"\n"))
                  .ok());
  auto r = RunCommand({BinaryDir() + "/bin/lazypull-snapshotter", "--root", tmp_.Sub("root"),
                       "--address", tmp_.Sub("s.sock"), "--config", tmp_.Sub("config.toml")},
                      std::chrono::seconds(60));
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1) << r->output;
  EXPECT_TRUE(absl::StrContains(r->output,
                                "cannot serve metrics on " + address + ": Address already in use"))
      << r->output;
  struct stat st;
  EXPECT_NE(::stat(tmp_.Sub("s.sock").c_str(), &st), 0) << "the daemon must not serve";
}

TEST_P(MetricsE2eTest, RestoredLayersAtStart) {
  const std::string address = StartDaemon();
  ASSERT_FALSE(address.empty());
  auto image = ResolvePushed(images->ref);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(client_->Prepare("extract-0", "", CriLabels(*image, 0, "layer-0")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  auto before = Scrape(address);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->Sum("lazypull_restored_layers", {{"result", "ok"}}), 0);
  ASSERT_TRUE(daemon_->Restart().ok());
  auto after = Scrape(address);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->Sum("lazypull_restored_layers", {{"result", "ok"}}), 1);
  EXPECT_EQ(after->Sum("lazypull_restored_layers", {{"result", "failed"}}), 0);
  EXPECT_EQ(after->Sum("lazypull_mounted_layers", {{"backend", GetParam()}}), 1);
  EXPECT_EQ(after->Sum("lazypull_unavailable_layers"), 0);
}

TEST_P(MetricsE2eTest, CorruptBytesCountAsVerificationFailures) {
  auto proxy = FaultProxy::Start(images->registry->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const std::string address = StartDaemon();
  ASSERT_FALSE(address.empty());
  // The image through the proxy, which flips a byte in every chunk fetch of the layer.
  const std::string ref = (*proxy)->host() + "/esgz:v1";
  auto image = ResolvePushed(ref);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(client_->Prepare("extract-0", "", CriLabels(*image, 0, "layer-0")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  MountList mounts;
  ASSERT_TRUE(client_->Prepare("container", "layer-0", {}, &mounts).ok());
  std::string dir = tmp_.Sub("mnt");
  ::mkdir(dir.c_str(), 0755);
  auto m = ScopedMount::Mount(mounts, dir);
  ASSERT_TRUE(m.ok()) << m.status();
  mounts_.push_back(std::move(*m));
  FaultRule corrupt;
  corrupt.kind = FaultKind::kCorruptByte;
  corrupt.method = "GET";
  corrupt.path_contains = image->resolved.manifest.layers[0].digest.hex();
  corrupt.times = -1;
  (*proxy)->AddRule(corrupt);
  auto big = ReadUncached(dir + "/data/big.bin");
  EXPECT_FALSE(big.ok());
  EXPECT_GT((*proxy)->faults_applied(), 0);
  auto p = Scrape(address);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_GT(p->Sum("lazypull_verification_failures_total"), 0);
  // A response carries several chunks and one flipped byte: the other chunks verify and are
  // served; the corrupt one never is (never stored), so the file cannot be read whole. Served
  // bytes are not bounded by the file size: the kernel retries a failed readahead request's
  // good pages with smaller reads, which serve them again.
  EXPECT_GT(p->Sum("lazypull_layer_read_bytes_total"), 0);
  EXPECT_LT(p->Sum("lazypull_chunk_cache_stored_bytes"), kBigSize);
}

INSTANTIATE_TEST_SUITE_P(Backends, MetricsE2eTest, ::testing::Values("fuse", "erofs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lazypull::testing
