// Isolation between registries (label root): one daemon serves layers from two registry hosts
// (two fault proxies in front of one docker-registry); one host stalls (accepts requests and
// answers nothing). Reads from the other host's layer and cached reads from the stalled
// layer are served while the stalled reads are still waiting (order, not time), and removing
// the stalled layer's snapshots returns within seconds (its fetches are cancelled), not after
// the request timeout. And a preload stalled on one registry never blocks another Prepare.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kFiles = 16;

// Far longer than the test may take: a read that returns comes from isolation, not a timeout.
constexpr char kDaemonConfig[] = R"(
[mount]
backend = "fuse"
background_fetch = false
readahead_window = 0
file_readahead = 0
fetch_timeout = "60s"
[registry]
max_retries = 0
request_timeout_ms = 120000
total_timeout_ms = 120000
low_speed_time_ms = 120000
)";

// File `i` of image `image` (0 or 1).
std::string FileContent(int i, int image = 0) {
  return RandomBytes(300 << 10, 100 + 100 * image + i);
}
std::string EstargzRepo(int image) { return image == 0 ? "esgz" : "esgz-other"; }

class IsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = RegistryProcess::Start(tmp_.Sub("reg"));
    ASSERT_TRUE(reg.ok()) << reg.status();
    registry_ = std::move(*reg);
    const std::string host = registry_->host();
    // Two images with the same busybox layer and different files: the second one's reads fill
    // the node's chunk cache with nothing the first one's stalled reads could be served from.
    for (int image = 0; image < 2; ++image) {
      ImageBuilder b(tmp_.Sub(absl::StrCat("image", image)));
      LayerChanges files;
      for (int i = 0; i < kFiles; ++i) {
        files.files.push_back(
            {.path = absl::StrCat("/data/f", i), .content = FileContent(i, image)});
      }
      b.AddLayer(LayerChanges::Busybox()).AddLayer(files);
      auto built = b.Build("v1");
      ASSERT_TRUE(built.ok()) << built.status();
      const std::string src = absl::StrCat(host, "/src", image, ":v1");
      ASSERT_TRUE(
          registry_->PushOciLayout(built->layout_dir, "v1", absl::StrCat("src", image, ":v1"))
              .ok());
      ASSERT_TRUE(
          LazypullConvert("estargz", src, absl::StrCat(host, "/", EstargzRepo(image), ":v1")).ok());
    }
    for (auto* p : {&stalled_, &healthy_}) {
      auto proxy = FaultProxy::Start(registry_->port());
      ASSERT_TRUE(proxy.ok()) << proxy.status();
      *p = std::move(*proxy);
    }
    SnapshotterOptions options;
    options.config_toml = std::string(kDaemonConfig) + ExtraConfig();
    options.log_level = "debug";
    auto d = SnapshotterProcess::Start(tmp_.Sub("daemon"), options);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  }
  virtual std::string ExtraConfig() const { return ""; }
  void TearDown() override {
    if (stalled_ != nullptr) stalled_->ClearRules();
    mounts_.clear();
    client_.reset();
    if (daemon_ != nullptr) {
      EXPECT_EQ(daemon_->Stop(), absl::OkStatus());
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
    }
  }

  // Prepares image `image_index`'s layers through `proxy` and mounts a container on them.
  std::string MountImageVia(FaultProxy& proxy, const std::string& prefix,
                            std::vector<std::string>* targets, int image_index = 0) {
    auto image = ResolvePushed(absl::StrCat(proxy.host(), "/", EstargzRepo(image_index), ":v1"));
    EXPECT_TRUE(image.ok()) << image.status();
    std::string parent;
    for (size_t i = 0; i < image->resolved.manifest.layers.size(); ++i) {
      std::string target = absl::StrCat(prefix, "-layer-", i);
      grpc::Status s = client_->Prepare(absl::StrCat(prefix, "-extract-", i), parent,
                                        StargzLabels(*image, i, target));
      EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
      targets->push_back(target);
      parent = target;
    }
    MountList mounts;
    EXPECT_TRUE(client_->Prepare(prefix + "-container", parent, {}, &mounts).ok());
    std::string dir = tmp_.Sub("mnt-" + prefix);
    fs::create_directories(dir);
    auto m = ScopedMount::Mount(mounts, dir);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) mounts_.push_back(std::move(*m));
    return dir;
  }

  TempDir tmp_{"lpiso"};
  std::unique_ptr<RegistryProcess> registry_;
  std::unique_ptr<FaultProxy> stalled_, healthy_;
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
  std::vector<std::unique_ptr<ScopedMount>> mounts_;
};

// Reads a whole file; whether it had the expected bytes.
bool ReadsExactly(const std::string& path, const std::string& want) {
  auto got = ReadFile(path);
  return got.ok() && *got == want;
}

TEST_F(IsolationTest, StalledRegistryDelaysNeitherOtherRegistriesNorCachedReads) {
  std::vector<std::string> stalled_targets, healthy_targets;
  const std::string a = MountImageVia(*stalled_, "a", &stalled_targets);
  const std::string b = MountImageVia(*healthy_, "b", &healthy_targets, 1);
  ASSERT_TRUE(ReadsExactly(a + "/data/f0", FileContent(0)));  // cached from now on

  FaultRule stall;
  stall.kind = FaultKind::kStall;
  stall.method = "GET";
  stall.times = -1;
  stalled_->AddRule(stall);
  // Every other file of the stalled layer: more reads than the daemon has fetch threads.
  std::atomic<int> stalled_done{0};
  std::vector<std::thread> readers;
  for (int i = 1; i < kFiles; ++i) {
    readers.emplace_back([&, i] {
      int fd = ::open(absl::StrCat(a, "/data/f", i).c_str(), O_RDONLY);
      char buf[4096];
      if (fd >= 0) {
        (void)::pread(fd, buf, sizeof(buf), 0);
        ::close(fd);
      }
      ++stalled_done;
    });
  }
  // Wait until the stalled host holds as many requests as it will get (the executor's
  // per-source limit), then a little more have had every chance to queue.
  ASSERT_TRUE(WaitUntil([&] { return stalled_->faults_applied() >= 3; }, std::chrono::seconds(30)));

  // The healthy registry's layer reads, and the stalled layer's cached file reads, while
  // every stalled read is still waiting.
  for (int i = 0; i < kFiles; ++i) {
    EXPECT_TRUE(ReadsExactly(absl::StrCat(b, "/data/f", i), FileContent(i, 1))) << i;
  }
  int fd = ::open((a + "/data/f0").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);  // served by the chunk cache
  ::close(fd);
  EXPECT_TRUE(ReadsExactly(a + "/data/f0", FileContent(0)));
  EXPECT_EQ(stalled_done.load(), 0) << "stalled reads returned: this proved nothing";

  // Removing the stalled layer's snapshots cancels its fetches: seconds, not the 120 s
  // request timeout.
  mounts_.erase(mounts_.begin());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(client_->Remove("a-container").ok());
  for (auto it = stalled_targets.rbegin(); it != stalled_targets.rend(); ++it) {
    grpc::Status s = client_->Remove(*it);
    EXPECT_TRUE(s.ok()) << *it << ": " << s.error_message();
  }
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(20)) << "Remove waited for the stalled fetches";
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(stalled_done.load(), kFiles - 1);
  // The healthy layer still serves.
  EXPECT_TRUE(ReadsExactly(b + "/data/f3", FileContent(3, 1)));
}

// Preloaded indexes that outlive preload_lifetime_ms are dropped by the next Prepare. One
// whose registry stalls must not be waited for there: that Prepare (under the manager's lock)
// would stall every Prepare of the node until the stalled request times out.
class StalePreloadTest : public IsolationTest {
 protected:
  std::string ExtraConfig() const override { return "[remote]\npreload_lifetime_ms = 1\n"; }
};

TEST_F(StalePreloadTest, AStalledPreloadDoesNotBlockOtherPrepares) {
  auto image = ResolvePushed(stalled_->host() + "/esgz:v1");
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->resolved.manifest.layers.size(), 2u);
  // Layer 1's blob stalls: layer 0 mounts, and its Prepare starts preloading layer 1's index.
  FaultRule stall;
  stall.kind = FaultKind::kStall;
  stall.method = "GET";
  stall.path_contains = "blobs/" + image->resolved.manifest.layers[1].digest.ToString();
  stall.times = -1;
  stalled_->AddRule(stall);
  grpc::Status s = client_->Prepare("a-extract-0", "", StargzLabels(*image, 0, "a-layer-0"));
  ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  ASSERT_TRUE(WaitUntil([&] { return stalled_->faults_applied() >= 1; }, std::chrono::seconds(30)))
      << "the preload of layer 1 never reached the registry";

  // Another image's Prepares find that preload stale: they must return while it still stalls.
  std::atomic<bool> done{false};
  std::vector<std::string> targets;
  std::thread other([&] {
    MountImageVia(*healthy_, "b", &targets);
    done = true;
  });
  const bool returned = WaitUntil([&] { return done.load(); }, std::chrono::seconds(90));
  const int stalled_requests = stalled_->faults_applied();
  stalled_->ClearRules();  // releases the stalled request (and a blocked Prepare, if any)
  other.join();
  EXPECT_TRUE(returned) << "a Prepare waited for another image's stalled preload";
  EXPECT_EQ(stalled_requests, 1);
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_TRUE(ReadsExactly(mounts_.back()->target() + "/data/f3", FileContent(3)));
}

}  // namespace
}  // namespace lazypull::testing
