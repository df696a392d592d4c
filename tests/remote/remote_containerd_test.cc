// Remote snapshots through a real containerd with a real client (issue 5, test b):
// `ctr-remote images rpull --snapshotter lazypull --plain-http REF` then
// `ctr run --snapshotter lazypull REF ...`, for eStargz made by `ctr-remote images convert`,
// eStargz made by `lazypull convert`, and zstd:chunked made by skopeo. Every layer must be
// mounted lazily (committed as a remote snapshot), and the container must see the image. Every
// case runs on every mount backend (FUSE, EROFS file-backed, EROFS through loop devices); with
// EROFS, a container started on graduated layers must survive a SIGKILL of the daemon, and no
// loop device may be left once everything stopped.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "mount/erofs/loop_device.h"
#include "nlohmann/json.hpp"
#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"

namespace lazypull::testing {
namespace {

constexpr char kRunScript[] =
    "cat /data/hello.txt; cat /etc/greeting; md5sum /data/big.bin | cut -c1-32; "
    "test -e /old/gone.txt || echo gone-is-gone; ls /old";

// Every test runs on every backend (the parameter is the [mount] backend; "erofs-loop" is EROFS
// with erofs_attach = "loop").
class RemoteContainerdTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Extra [mount] keys of the snapshotter's config.
  virtual std::string MountConfigExtra() const { return ""; }

  void SetUp() override {
    ImageBuilder builder(dir_.Sub("image"));
    builder.AddLayer(LayerChanges::Busybox());
    LayerChanges data = BigFilesLayer();
    data.files.push_back({"/data/hello.txt", "hello from a lazy layer\n"});
    builder.AddLayer(data);
    builder.AddLayer(DeletionsLayer());
    builder.SetCmd({"/bin/sh"});
    auto image = builder.Build("v1");
    ASSERT_TRUE(image.ok()) << image.status();
    image_ = *image;
    auto registry = RegistryProcess::Start(dir_.Sub("registry"));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
    ASSERT_TRUE(registry_->PushOciLayout(image_.layout_dir, "v1", "src:v1").ok());

    ASSERT_EQ(mkdir(dir_.Sub("lp").c_str(), 0755), 0);
    SnapshotterOptions sopts;
    const bool loop = GetParam() == "erofs-loop";
    sopts.config_toml = absl::StrCat("[mount]\nbackend = \"", loop ? "erofs" : GetParam(), "\"\n",
                                     loop ? "erofs_attach = \"loop\"\n" : "", MountConfigExtra(),
                                     "[remote]\nstatus_interval_ms = 200\n");
    auto snapshotter = SnapshotterProcess::Start(dir_.Sub("lp"), sopts);
    ASSERT_TRUE(snapshotter.ok()) << snapshotter.status();
    snapshotter_ = std::move(*snapshotter);
    ContainerdOptions options;
    options.proxy_snapshotter_socket = snapshotter_->socket();
    ASSERT_EQ(mkdir(dir_.Sub("cd").c_str(), 0755), 0);
    auto containerd = ContainerdProcess::Start(dir_.Sub("cd"), options);
    ASSERT_TRUE(containerd.ok()) << containerd.status();
    containerd_ = std::move(*containerd);
    // Expected output, computed with busybox's md5sum semantics on the host.
    ASSERT_TRUE(WriteFile(dir_.Sub("big.bin"), RandomBytes(1 << 20, 1)).ok());
    auto md5 =
        RunShell("md5sum " + dir_.Sub("big.bin") + " | cut -c1-32", std::chrono::seconds(10));
    ASSERT_TRUE(md5.ok());
    expected_output_ = absl::StrCat("hello from a lazy layer\nhello from the lazy layer\n",
                                    md5->output, "gone-is-gone\nkept.txt\nnew.txt\n");
  }
  void TearDown() override {
    if (containerd_ != nullptr) {
      EXPECT_EQ(containerd_->Stop(), absl::OkStatus());
    }
    if (snapshotter_ != nullptr) {
      if (HasFailure()) std::cerr << "--- snapshotter log ---\n" << snapshotter_->ReadLog();
      EXPECT_EQ(snapshotter_->Stop(), absl::OkStatus());
    }
    EXPECT_TRUE(WaitUntil([&] { return LoopDevicesLeft() == 0; }))
        << LoopDevicesLeft() << " loop devices are left";
  }

  // Bound loop devices of this test's snapshotter (its owner tag, or a backing file under the
  // test dir).
  size_t LoopDevicesLeft() const {
    const std::string owner = mount::erofs::LoopOwnerTag(dir_.Sub("lp") + "/erofs");
    size_t n = 0;
    for (const auto& d : mount::erofs::ListLoopDevices()) {
      n += mount::erofs::IsOwnedLoopDevice(d, owner) ||
           d.backing_file.rfind(dir_.path() + "/", 0) == 0;
    }
    return n;
  }

  absl::StatusOr<CommandResult> CtrRemote(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"ctr-remote", "--address", containerd_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, std::chrono::seconds(180));
  }

  // rpull + run in a fresh namespace; checks the output and that every layer of `ref` is a
  // lazily mounted remote snapshot.
  void RpullAndRun(const std::string& ns, const std::string& ref) {
    auto pulled =
        CtrRemote({"-n", ns, "images", "rpull", "--snapshotter", "lazypull", "--plain-http", ref});
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
    auto out = containerd_->CtrOk({"-n", ns, "run", "--rm", "--snapshotter", "lazypull", ref,
                                   ns + "-c", "/bin/sh", "-c", kRunScript});
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, expected_output_);
    auto image = ResolvePushed(ref);
    ASSERT_TRUE(image.ok()) << image.status();
    const std::string status_path = snapshotter_->root() + "/status.json";
    const std::set<std::string> lazy = LazyLayerDigests(status_path);
    for (const oci::Descriptor& layer : image->resolved.manifest.layers) {
      EXPECT_TRUE(lazy.contains(layer.digest.ToString()))
          << "layer " << layer.digest.ToString() << " is not mounted lazily:\n"
          << ReadFile(status_path).value_or("(no status.json)");
    }
  }

  TempDir dir_{"lprc"};
  BuiltImage image_;
  std::unique_ptr<RegistryProcess> registry_;
  std::unique_ptr<SnapshotterProcess> snapshotter_;
  std::unique_ptr<ContainerdProcess> containerd_;
  std::string expected_output_;
};

TEST_P(RemoteContainerdTest, RpullAndRunEstargzFromCtrRemoteConvert) {
  const std::string src = registry_->host() + "/src:v1";
  const std::string dst = registry_->host() + "/ctr-esgz:v1";
  ASSERT_TRUE(containerd_->CtrOk({"-n", "convert", "images", "pull", "--plain-http", src}).ok());
  auto conv = CtrRemote({"-n", "convert", "images", "convert", "--estargz", "--oci", src, dst});
  ASSERT_TRUE(conv.ok());
  ASSERT_EQ(conv->exit_code, 0) << conv->output;
  ASSERT_TRUE(containerd_->CtrOk({"-n", "convert", "images", "push", "--plain-http", dst}).ok());
  RpullAndRun("esgz-ctr", dst);
}

TEST_P(RemoteContainerdTest, RpullAndRunEstargzFromLazypullConvert) {
  const std::string dst = registry_->host() + "/lp-esgz:v1";
  ASSERT_TRUE(LazypullConvert("estargz", registry_->host() + "/src:v1", dst).ok());
  RpullAndRun("esgz-lp", dst);
}

// CRI's label set through containerd's own client code (Pull + WithPullUnpack +
// AppendInfoHandlerWrapper, as the CRI plugin does), on zstd:chunked from `lazypull convert`.
TEST_P(RemoteContainerdTest, CriStylePullAndRunZstdChunkedFromLazypullConvert) {
  const std::string dst = registry_->host() + "/lp-zc:v1";
  ASSERT_TRUE(LazypullConvert("zstd:chunked", registry_->host() + "/src:v1", dst).ok());
  auto pulled = containerd_->CriPull("cri-zc", dst, "lazypull");
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  auto out = containerd_->CtrOk({"-n", "cri-zc", "run", "--rm", "--snapshotter", "lazypull", dst,
                                 "cri-c", "/bin/sh", "-c", kRunScript});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, expected_output_);
  auto image = ResolvePushed(dst);
  ASSERT_TRUE(image.ok()) << image.status();
  const std::string status_path = snapshotter_->root() + "/status.json";
  const std::set<std::string> lazy = LazyLayerDigests(status_path);
  for (const oci::Descriptor& layer : image->resolved.manifest.layers) {
    EXPECT_TRUE(lazy.contains(layer.digest.ToString()))
        << "layer " << layer.digest.ToString() << " is not mounted lazily:\n"
        << ReadFile(status_path).value_or("(no status.json)");
  }
}

TEST_P(RemoteContainerdTest, RpullAndRunZstdChunkedFromSkopeo) {
  const std::string dst = registry_->host() + "/skopeo-zc:v1";
  ASSERT_TRUE(PushZstdChunkedWithSkopeo(dir_.path(), image_.layout_dir, "v1", dst).ok());
  RpullAndRun("zc-skopeo", dst);
}

std::string BackendName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param == "erofs-loop" ? "erofs_loop" : info.param;
}
INSTANTIATE_TEST_SUITE_P(Backends, RemoteContainerdTest,
                         ::testing::Values("fuse", "erofs", "erofs-loop"), BackendName);

// Mount source (the image file for EROFS) and type of the topmost mount at `path`.
std::pair<std::string, std::string> MountSourceAndType(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::pair<std::string, std::string> found;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() < 10 || f[4] != path) continue;
    for (size_t i = 6; i + 2 < f.size(); ++i) {
      if (f[i] == "-") found = {f[i + 2], f[i + 1]};
    }
  }
  return found;
}

// EROFS graduation with a real container: once the image's layers are local, a container
// started from then on runs on EROFS over the local copies with no FUSE under it, so killing
// the daemon with SIGKILL while it reads does not disturb it.
class GraduatedContainerTest : public RemoteContainerdTest {
 protected:
  std::string MountConfigExtra() const override { return "background_silence = 0\n"; }
};

TEST_P(GraduatedContainerTest, KillDashNineDoesNotDisturbAContainerOnGraduatedLayers) {
  const std::string ref = registry_->host() + "/grad-zc:v1";
  ASSERT_TRUE(LazypullConvert("zstd:chunked", registry_->host() + "/src:v1", ref).ok());
  auto pulled = CtrRemote(
      {"-n", "grad", "images", "rpull", "--snapshotter", "lazypull", "--plain-http", ref});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
  auto image = ResolvePushed(ref);
  ASSERT_TRUE(image.ok()) << image.status();
  const size_t layers = image->resolved.manifest.layers.size();
  bool graduated = false;
  nlohmann::json status;
  for (int i = 0; i < 600 && !graduated; ++i) {
    auto text = ReadFile(snapshotter_->root() + "/status.json");
    status = text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    size_t n = 0;
    if (status.is_object()) {
      for (const auto& l : status.value("layers", nlohmann::json::array())) {
        n += l.value("graduated", false) ? 1 : 0;
      }
    }
    graduated = n == layers;
    if (!graduated) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(graduated) << status.dump();

  // The container waits for /sig/go, then reads files it never read before.
  ASSERT_EQ(mkdir(dir_.Sub("sig").c_str(), 0755), 0);
  const std::string script =
      "while [ ! -e /sig/go ]; do sleep 0.05; done; md5sum /data/big.bin | cut -c1-32; "
      "md5sum /data/other.bin | cut -c1-32; cat /etc/greeting; ls /old";
  absl::StatusOr<CommandResult> run;
  std::thread runner([&] {
    run = containerd_->Ctr({"-n", "grad", "run", "--snapshotter", "lazypull", "--mount",
                            "type=bind,src=" + dir_.Sub("sig") + ",dst=/sig,options=rbind:ro", ref,
                            "grad-c", "/bin/sh", "-c", script},
                           std::chrono::seconds(120));
  });
  bool running = false;
  for (int i = 0; i < 600 && !running; ++i) {
    auto tasks = containerd_->Ctr({"-n", "grad", "tasks", "ls"});
    running = tasks.ok() && absl::StrContains(tasks->output, "RUNNING");
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(running);
  // Every layer the container sees is EROFS over a graduated local copy.
  for (const auto& l : status["layers"]) {
    auto [source, type] = MountSourceAndType(l.value("target", ""));
    EXPECT_EQ(type, "erofs") << l.dump();
    if (GetParam() == "erofs-loop") {
      ASSERT_TRUE(absl::StartsWith(source, "/dev/loop")) << source;
      auto backing = ReadFile("/sys/block/" + source.substr(5) + "/loop/backing_file");
      ASSERT_TRUE(backing.ok()) << backing.status();
      source = *backing;
    }
    EXPECT_TRUE(absl::StrContains(source, "/graduated/")) << source;
  }
  snapshotter_->Kill();
  ASSERT_TRUE(WriteFile(dir_.Sub("sig/go"), "").ok());
  runner.join();
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->output;
  auto md5 = RunShell("md5sum " + dir_.Sub("big.bin") + " | cut -c1-32", std::chrono::seconds(10));
  ASSERT_TRUE(WriteFile(dir_.Sub("other.bin"), RandomBytes(3 << 20, 2)).ok());
  auto md5_other =
      RunShell("md5sum " + dir_.Sub("other.bin") + " | cut -c1-32", std::chrono::seconds(10));
  ASSERT_TRUE(md5.ok() && md5_other.ok());
  EXPECT_EQ(run->output, absl::StrCat(md5->output, md5_other->output,
                                      "hello from the lazy layer\nkept.txt\nnew.txt\n"));
  // Clean up through a live snapshotter.
  ASSERT_TRUE(snapshotter_->Restart().ok()) << snapshotter_->ReadLog();
  EXPECT_TRUE(containerd_->Ctr({"-n", "grad", "containers", "rm", "grad-c"}).ok());
}

INSTANTIATE_TEST_SUITE_P(Erofs, GraduatedContainerTest, ::testing::Values("erofs", "erofs-loop"),
                         BackendName);

}  // namespace
}  // namespace lazypull::testing
