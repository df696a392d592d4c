// The fixture of the daemon-level remote snapshot tests (remote_daemon_test.cc,
// remote_erofs_daemon_test.cc): a docker-registry with the test images behind the harness fault
// proxy, the real lazypull-snapshotter with the [mount] backend under test ("fuse", "erofs",
// "erofs-loop"), a gRPC client, and helpers to prepare lazy chains and mount what they return.
// One test binary per including file (the globals are per binary).
#ifndef LAZYPULL_TESTS_REMOTE_REMOTE_DAEMON_FIXTURE_H_
#define LAZYPULL_TESTS_REMOTE_REMOTE_DAEMON_FIXTURE_H_

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

inline constexpr char kFetchTimeout[] = "4s";
// After the [mount] section's backend line (see DaemonConfig).
inline constexpr char kDaemonConfig[] = R"(
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
inline std::string DaemonConfig(const std::string& backend,
                                const std::string& mount_extra = "background_fetch = false\n") {
  if (backend == "erofs-loop") {
    return absl::StrCat("[mount]\nbackend = \"erofs\"\nerofs_attach = \"loop\"\n", mount_extra,
                        kDaemonConfig);
  }
  return absl::StrCat("[mount]\nbackend = \"", backend, "\"\n", mount_extra, kDaemonConfig);
}

// Bound loop devices of the daemon whose root is `root`: tagged with its EROFS dir's owner tag,
// or backed by a file under the root.
inline size_t DaemonLoopDevices(const std::string& root) {
  const std::string owner = mount::erofs::LoopOwnerTag(root + "/erofs");
  size_t n = 0;
  for (const auto& d : mount::erofs::ListLoopDevices()) {
    n += mount::erofs::IsOwnedLoopDevice(d, owner) || d.backing_file.rfind(root + "/", 0) == 0;
  }
  return n;
}

// Built once per test binary (see RemoteTestImages).
inline RemoteTestImages* images = nullptr;
// Built on first use: one layer with a file over 4 GiB (BuildHugeSparseLayout), as
// huge-esgz:v1 and huge-zc:v1.
inline absl::Status huge_status = absl::UnknownError("not built");
inline bool huge_built = false;

// Sum of the bytes of the blob range requests for `digest_hex` that went through the proxy;
// a blob GET without Range counts as "whole" (sets *unranged).
inline uint64_t RangeBytes(const std::vector<RecordedRequest>& requests,
                           const std::string& digest_hex, bool* unranged) {
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
inline std::vector<std::string> StatusTableRow(const std::string& output,
                                               const std::string& short_digest) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (cols.size() >= 9 && cols[1] == short_digest) return cols;
  }
  return {};
}

// Whether `path` is a mount point of type `fstype` in this process's mount namespace.
inline bool IsMountOfType(const std::string& path, const std::string& fstype) {
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
inline int ReadErrno(const std::string& path, std::string* out = nullptr) {
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
  // The backend status reports for a lazy layer.
  std::string BackendName() const { return GetParam() == "fuse" ? "fuse" : "erofs"; }
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

// Test names for the backend parameter ("erofs-loop" → "erofs_loop").
inline std::string ParamName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param == "erofs-loop" ? "erofs_loop" : info.param;
}

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_REMOTE_REMOTE_DAEMON_FIXTURE_H_
