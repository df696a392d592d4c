// The chart's pod really works (issue 11): charts/lazypull is rendered (helmrender), and its
// DaemonSet's container is run on this machine exactly as rendered — command, args, the
// ConfigMap's lazypull.toml at its mount path, hostPath volumes at the node paths
// (/var/lib/lazypull, /run/lazypull, /dev/fuse, /etc/containerd read-only, ...), probes as
// exec commands — inside a node sandbox (private mount and network namespaces, so the real
// paths and port 9102 are the sandbox's own). A containerd configured as the README says
// (proxy plugin at the rendered socket, CRI snapshotter "lazypull" with
// disable_snapshot_annotations = false) then pulls eStargz images through its CRI plugin and
// runs them in pods: every layer is mounted lazily and the containers see the images.
//
//   1. default values;
//   2. values with a registry mirror and credentials from a docker config.json Secret: every
//      layer byte comes from the (Basic-auth) mirror, with credentials, none from the registry.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/config.h"
#include "tests/cri/cri_client.h"
#include "tests/deploy/chart_util.h"
#include "tests/deploy/node_sandbox.h"
#include "tests/deploy/pod_runner.h"
#include "tests/deploy/prom_text.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"

namespace lazypull::testing {
namespace {

constexpr char kUser[] = "puller";
constexpr char kPassword[] = "s3cret-pw";
constexpr char kRunScript[] =
    "cat /etc/image-id; cat /data/hello.txt; cat /etc/greeting; "
    "md5sum /data/big.bin | cut -c1-32; test -e /old/gone.txt || echo gone-is-gone; ls /old";

struct Env {
  TempDir dir{"lphds"};
  std::unique_ptr<RegistryProcess> registry;  // push side, no auth
  std::unique_ptr<RegistryProcess> mirror;    // same storage, Basic auth, read-only
  std::unique_ptr<FaultProxy> upstream_wire;  // records what reaches the registry
  std::unique_ptr<FaultProxy> mirror_wire;    // records what reaches the mirror
  std::string md5_big;
  absl::Status status;
};
Env* env = nullptr;

absl::Status BuildAndPush(const std::string& name) {
  ImageBuilder builder(env->dir.Sub("img-" + name));
  LayerChanges base = LayerChanges::Busybox();
  base.files.push_back({.path = "/etc/image-id", .content = "image " + name + "\n"});
  builder.AddLayer(base);
  if (name == "pause") {
    builder.SetCmd({"/bin/sleep", "100000"});
  } else {
    LayerChanges data = BigFilesLayer();
    data.files.push_back({.path = "/data/hello.txt", .content = "hello from a lazy layer\n"});
    builder.AddLayer(data);
    builder.AddLayer(DeletionsLayer());
    builder.SetCmd({"/bin/sh"});
  }
  absl::StatusOr<BuiltImage> image = builder.Build("v1");
  if (!image.ok()) return image.status();
  const std::string host = env->registry->host();
  if (name == "pause") return env->registry->PushOciLayout(image->layout_dir, "v1", "pause:v1");
  absl::Status s = env->registry->PushOciLayout(image->layout_dir, "v1", "src-" + name + ":v1");
  if (!s.ok()) return s;
  return LazypullConvert("estargz", host + "/src-" + name + ":v1", host + "/" + name + ":v1");
}

absl::Status SetUpEnv() {
  // Everything lives in the sandbox: registries, lazypull, containerd, pods.
  if (absl::Status s = EnterNodeSandbox(env->dir.path()); !s.ok()) return s;
  auto registry = RegistryProcess::Start(env->dir.Sub("reg"));
  if (!registry.ok()) return registry.status();
  env->registry = std::move(*registry);
  RegistryOptions mirror_opts;
  mirror_opts.basic_user = {{kUser, kPassword}};
  mirror_opts.storage_dir = env->registry->storage_dir();
  mirror_opts.read_only = true;
  auto mirror = RegistryProcess::Start(env->dir.Sub("mirror"), mirror_opts);
  if (!mirror.ok()) return mirror.status();
  env->mirror = std::move(*mirror);
  auto up = FaultProxy::Start(env->registry->port());
  if (!up.ok()) return up.status();
  env->upstream_wire = std::move(*up);
  auto mw = FaultProxy::Start(env->mirror->port());
  if (!mw.ok()) return mw.status();
  env->mirror_wire = std::move(*mw);
  for (const char* name : {"pause", "plain", "mirrored"}) {
    if (absl::Status s = BuildAndPush(name); !s.ok()) return s;
  }
  if (absl::Status s = WriteFile(env->dir.Sub("big.bin"), RandomBytes(1 << 20, 1)); !s.ok()) {
    return s;
  }
  auto md5 =
      RunShell("md5sum " + env->dir.Sub("big.bin") + " | cut -c1-32", std::chrono::seconds(10));
  if (!md5.ok()) return md5.status();
  env->md5_big = md5->output;
  return absl::OkStatus();
}

// The fenced containerd config (version 2) the README gives after `marker`.
std::vector<std::string> ReadmeTomlLines(const std::string& marker) {
  auto readme = ReadFile(SourceDir() + "/README.md");
  if (!readme.ok()) return {};
  size_t at = readme->find(marker);
  if (at == std::string::npos) return {};
  size_t begin = readme->find("```toml\n", at);
  size_t end = readme->find("```\n", begin + 8);
  std::vector<std::string> lines;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(*readme).substr(begin + 8, end - begin - 8), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty() && line[0] != '#') lines.emplace_back(line);
  }
  return lines;
}

class HelmDaemonSetE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env = new Env;
    env->status = SetUpEnv();
  }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(env->status.ok()) << env->status; }
  void TearDown() override {
    if (containerd_ != nullptr) {
      EXPECT_EQ(containerd_->Stop(), absl::OkStatus());
    }
    if (pod_ != nullptr) {
      if (HasFailure()) std::cerr << "--- pod log ---\n" << pod_->ReadLog();
      EXPECT_TRUE(pod_->Stop().ok()) << pod_->ReadLog();
    }
    // The node's lazypull state goes with the test (the next one starts afresh).
    UnmountAllUnder("/var/lib/lazypull");
    std::error_code ec;
    std::filesystem::remove_all("/var/lib/lazypull", ec);
  }

  // Runs the rendered pod, waits for its startup probe, then starts containerd as the README
  // configures it, with the pod's socket.
  void StartPodAndContainerd(const nlohmann::json& objects, const SecretData& secrets = {}) {
    auto pod = PodRunner::Start(objects, tmp_.path(), secrets);
    ASSERT_TRUE(pod.ok()) << pod.status();
    pod_ = std::move(*pod);
    ASSERT_TRUE(pod_->WaitStarted().ok()) << pod_->ReadLog();
    auto config = ParseDaemonConfig(
        FindObject(objects, "ConfigMap")["data"]["config.toml"].get<std::string>(), "chart");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;

    ContainerdOptions copts;
    copts.proxy_snapshotter_socket = config_.address;
    copts.enable_cri = true;
    copts.cri_plugin_config =
        absl::StrCat("  sandbox_image = \"", env->registry->host(), "/pause:v1\"");
    ASSERT_EQ(::mkdir(tmp_.Sub("cd").c_str(), 0755), 0);
    auto cd = ContainerdProcess::Start(tmp_.Sub("cd"), copts);
    ASSERT_TRUE(cd.ok()) << cd.status();
    containerd_ = std::move(*cd);
    // That is the README's containerd 1.6/1.7 configuration, entry for entry.
    auto written = ReadFile(containerd_->config_path());
    ASSERT_TRUE(written.ok());
    std::vector<std::string> readme = ReadmeTomlLines("containerd 1.6 and 1.7 (config version 2)");
    ASSERT_FALSE(readme.empty());
    for (const std::string& line : readme) {
      EXPECT_TRUE(absl::StrContains(*written, line)) << line << "\n" << *written;
    }
    cri_ = std::make_unique<CriClient>(containerd_->address(), containerd_->address());
  }

  // Pulls `ref` through containerd's CRI and checks that lazypull mounted every layer lazily,
  // then runs it in a pod and checks what the container sees.
  void PullLazilyAndRun(const std::string& ref, const std::string& name) {
    grpc::Status s = cri_->PullImage(ref, std::nullopt);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << pod_->ReadLog();
    auto image = ResolvePushed(env->registry->host() + "/" + name + ":v1");
    ASSERT_TRUE(image.ok()) << image.status();
    layers_ = image->resolved.manifest.layers;
    ASSERT_EQ(layers_.size(), 3u);
    const std::string status_file = config_.root + "/status.json";
    EXPECT_TRUE(WaitUntil(
        [&] {
          const std::set<std::string> lazy = LazyLayerDigests(status_file);
          for (const oci::Descriptor& l : layers_) {
            if (!lazy.contains(l.digest.ToString())) return false;
          }
          return true;
        },
        std::chrono::seconds(20)))
        << ReadFile(status_file).value_or("(no status.json)");
    auto run =
        cri_->RunContainer(name + "-pod", ref, {"/bin/sh", "-c", kRunScript}, tmp_.Sub("pod-logs"));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 0);
    EXPECT_EQ(run->output, absl::StrCat("image ", name, "\nhello from a lazy layer\n",
                                        "hello from the lazy layer\n", env->md5_big,
                                        "gone-is-gone\nkept.txt\nnew.txt\n"));
    for (const char* probe : {"livenessProbe", "readinessProbe"}) {
      auto r = pod_->RunProbe(probe);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->exit_code, 0) << probe << ": " << r->output;
    }
  }

  TempDir tmp_{"lphd"};
  std::unique_ptr<PodRunner> pod_;
  std::unique_ptr<ContainerdProcess> containerd_;
  std::unique_ptr<CriClient> cri_;
  DaemonConfig config_;
  std::vector<oci::Descriptor> layers_;
};

TEST_F(HelmDaemonSetE2eTest, DefaultValuesPodServesTheNodesContainerdLazily) {
  auto objects = RenderChart({"--namespace", "kube-system"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  StartPodAndContainerd(*objects);
  ASSERT_FALSE(HasFatalFailure());
  // Exactly the rendered process and paths; metrics on the node's IP (the downward API's
  // status.hostIP, 127.0.0.1 in this sandbox), expanded as the kubelet does.
  EXPECT_EQ(pod_->argv(),
            (std::vector<std::string>{"/usr/bin/lazypull-snapshotter", "--config",
                                      "/etc/lazypull/config.toml", "--metrics-host", "127.0.0.1"}));
  EXPECT_EQ(config_.root, "/var/lib/lazypull");
  EXPECT_EQ(config_.address, "/run/lazypull/lazypull.sock");

  PullLazilyAndRun(env->registry->host() + "/plain:v1", "plain");
  // The lazy mounts live under the node's /var/lib/lazypull, where containerd's overlays
  // find them.
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  int lazy_mounts = 0;
  while (std::getline(mountinfo, line)) {
    if (absl::StrContains(line, " /var/lib/lazypull/snapshots/")) ++lazy_mounts;
  }
  EXPECT_GE(lazy_mounts, 3);
  // The metrics the pod annotations advertise.
  const nlohmann::json ann =
      FindObject(*objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"];
  auto metrics = Scrape("127.0.0.1:" + ann["prometheus.io/port"].get<std::string>());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_GT(metrics->Sum("lazypull_fetched_bytes_total"), 0);
  EXPECT_EQ(metrics->Sum("lazypull_snapshot_request_errors_total",
                         {{"method", "Prepare"}, {"code", "ALREADY_EXISTS"}}),
            3);
  EXPECT_EQ(metrics->Sum("lazypull_mounted_layers"), 3);
}

TEST_F(HelmDaemonSetE2eTest, MirrorAndCredentialsFromValuesServeEveryLayerByte) {
  const std::string upstream = env->upstream_wire->host();
  const std::string mirror = env->mirror_wire->host();
  const int metrics_port = PickFreePort();
  ASSERT_TRUE(WriteFile(tmp_.Sub("values.yaml"),
                        absl::StrCat("logLevel: debug\nbackend: fuse\ncache:\n  maxSize: 1GiB\n",
                                     "registry:\n  mirrors:\n    \"", upstream, "\": [\"http://",
                                     mirror, "\"]\n  plainHTTP: [\"", upstream, "\"]\n",
                                     "  credentials:\n    existingSecret: regcred\n",
                                     "metrics:\n  port: ", metrics_port, "\n"))
                  .ok());
  auto objects = RenderChart({"--values", tmp_.Sub("values.yaml"), "--namespace", "kube-system"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  // The Secret an admin creates (kubectl create secret docker-registry regcred ...).
  const std::string auth = absl::Base64Escape(absl::StrCat(kUser, ":", kPassword));
  SecretData secrets = {{"regcred",
                         {{".dockerconfigjson", absl::StrCat(R"({"auths":{")", mirror,
                                                             R"(":{"auth":")", auth, R"("}}})")}}}};
  env->upstream_wire->ClearRequests();
  env->mirror_wire->ClearRequests();
  StartPodAndContainerd(*objects, secrets);
  ASSERT_FALSE(HasFatalFailure());

  PullLazilyAndRun(upstream + "/mirrored:v1", "mirrored");
  ASSERT_FALSE(HasFatalFailure());
  // containerd fetched the manifest and config from the registry; every layer byte lazypull
  // read came from the mirror, with the Secret's credentials.
  uint64_t mirror_layer_gets = 0;
  for (const RecordedRequest& r : env->upstream_wire->Requests()) {
    for (const oci::Descriptor& l : layers_) {
      EXPECT_FALSE(absl::StrContains(r.target, l.digest.hex()))
          << "layer bytes from the registry itself: " << r.method << " " << r.target;
    }
  }
  for (const RecordedRequest& r : env->mirror_wire->Requests()) {
    if (!absl::StrContains(r.target, "/blobs/")) continue;
    ++mirror_layer_gets;
    if (r.target.find("/v2/") == 0 && r.fault.empty()) {
      auto a = r.headers.find("authorization");
      ASSERT_NE(a, r.headers.end()) << r.target;
      EXPECT_EQ(a->second, "Basic " + auth) << r.target;
    }
  }
  EXPECT_GE(mirror_layer_gets, layers_.size());
  auto metrics = Scrape(absl::StrCat("127.0.0.1:", metrics_port));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_GT(metrics->Sum("lazypull_fetched_bytes_total"), 0);
  EXPECT_EQ(metrics->Sum("lazypull_layer_info", {{"backend", "fuse"}}), 3);
  EXPECT_GT(metrics->Sum("lazypull_registry_requests_total", {{"status", "206"}}), 0);
}

}  // namespace
}  // namespace lazypull::testing
