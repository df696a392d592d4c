// lazypull's own container image (issue 11): scripts/build-image.sh builds it from Debian
// packages and pushes it to a test registry; the node's containerd pulls it and runs it with
// `ctr run` exactly as the chart's DaemonSet asks (privileged, host network, the rendered
// command, args and config, every hostPath volume, the root with rshared propagation and an
// rshared rootfs — what CRI does for mountPropagation: Bidirectional). The daemon in that
// container then serves snapshots to the same containerd: a lazy eStargz image pulled through
// containerd's CRI is mounted lazily (the mounts made in the container appear on the node) and
// runs in a pod. The image's size is reported (and compared with the Debian tree it came from).
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/cri/cri_client.h"
#include "tests/deploy/chart_util.h"
#include "tests/deploy/node_sandbox.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"

namespace lazypull::testing {
namespace {

constexpr char kSystemNs[] = "lazypull-system";
constexpr char kTask[] = "lazypull-ds";
constexpr char kRunScript[] =
    "cat /etc/image-id; cat /data/hello.txt; md5sum /data/big.bin | cut -c1-32; "
    "test -e /old/gone.txt || echo gone-is-gone; ls /old";

nlohmann::json ByName(const nlohmann::json& list, const std::string& name) {
  for (const nlohmann::json& e : list) {
    if (e.value("name", "") == name) return e;
  }
  return nullptr;
}

int CountMountsUnder(const std::string& prefix) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (absl::StrContains(line, " " + prefix)) ++n;
  }
  return n;
}

class ImageE2eTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (containerd_ != nullptr) {
      if (HasFailure()) {
        auto logs = containerd_->Ctr({"-n", kSystemNs, "task", "ls"});
        if (logs.ok()) std::cerr << "--- tasks ---\n" << logs->output;
        auto pod = ReadFile(dir_.Sub("pod.log"));
        if (pod.ok()) std::cerr << "--- lazypull container log ---\n" << *pod;
      }
      EXPECT_EQ(containerd_->Stop(), absl::OkStatus());
    }
    UnmountAllUnder("/var/lib/lazypull");
  }

  // `ctr task exec` of the rendered probe inside the running lazypull container.
  absl::StatusOr<CommandResult> Probe(const nlohmann::json& container, const std::string& probe,
                                      int n) {
    std::vector<std::string> args = {
        "-n", kSystemNs, "task", "exec", "--exec-id", absl::StrCat("probe-", n), kTask};
    for (const nlohmann::json& a : container[probe]["exec"]["command"]) args.push_back(a);
    return containerd_->Ctr(args, std::chrono::seconds(30));
  }

  TempDir dir_{"lpimg"};
  std::unique_ptr<RegistryProcess> registry_;
  std::unique_ptr<ContainerdProcess> containerd_;
};

TEST_F(ImageE2eTest, ImageRunByContainerdServesTheNodesContainerd) {
  // Build the image (before entering the sandbox: it reads this machine's dpkg database),
  // then push it to the test registry.
  auto built = RunCommand({"bash", SourceDir() + "/scripts/build-image.sh", "--build-dir",
                           BinaryDir(), "--output", dir_.Sub("oci"), "--tag", "test"},
                          std::chrono::seconds(1200));
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_EQ(built->exit_code, 0) << built->output;
  std::string last = built->output.substr(built->output.rfind("\n{") + 1);
  nlohmann::json size = nlohmann::json::parse(last, nullptr, false);
  ASSERT_TRUE(size.is_object()) << built->output;
  const double rootfs_mib = size["rootfs_bytes"].get<double>() / (1 << 20);
  const double compressed_mib = size["compressed_bytes"].get<double>() / (1 << 20);
  const double tree_mib = size["debootstrap_tree_bytes"].get<double>() / (1 << 20);
  std::cout << "lazypull image: " << compressed_mib << " MiB compressed, " << rootfs_mib
            << " MiB unpacked, " << size["files"]
            << " files (the Debian tree it came from: " << tree_mib << " MiB)\n";
  RecordProperty("image_compressed_bytes", std::to_string(size["compressed_bytes"].get<int64_t>()));
  RecordProperty("image_rootfs_bytes", std::to_string(size["rootfs_bytes"].get<int64_t>()));
  ASSERT_TRUE(EnterNodeSandbox(dir_.path()).ok());
  auto registry = RegistryProcess::Start(dir_.Sub("reg"));
  ASSERT_TRUE(registry.ok()) << registry.status();
  registry_ = std::move(*registry);
  const std::string image_ref = registry_->host() + "/lazypull:test";
  ASSERT_TRUE(registry_->PushOciLayout(dir_.Sub("oci"), "test", "lazypull:test").ok());
  // Only lazypull's own files and the libraries they link: a fraction of the Debian tree.
  EXPECT_LT(rootfs_mib, tree_mib * 0.3);

  // The node: lazypull's hostPath dirs, the root a shared mount (kubelet requires it for
  // Bidirectional propagation), containerd as the README configures it.
  std::error_code ec;
  std::filesystem::create_directories("/var/lib/lazypull", ec);
  std::filesystem::create_directories("/run/lazypull", ec);
  std::filesystem::create_directories("/etc/containerd/certs.d", ec);
  ASSERT_EQ(::mount("/var/lib/lazypull", "/var/lib/lazypull", nullptr, MS_BIND, nullptr), 0);
  ASSERT_EQ(::mount(nullptr, "/var/lib/lazypull", nullptr, MS_SHARED | MS_REC, nullptr), 0);

  ImageBuilder pause(dir_.Sub("img-pause"));
  pause.AddLayer(LayerChanges::Busybox()).SetCmd({"/bin/sleep", "100000"});
  auto pause_image = pause.Build("v1");
  ASSERT_TRUE(pause_image.ok()) << pause_image.status();
  ASSERT_TRUE(registry_->PushOciLayout(pause_image->layout_dir, "v1", "pause:v1").ok());
  ImageBuilder app(dir_.Sub("img-app"));
  LayerChanges base = LayerChanges::Busybox();
  base.files.push_back({.path = "/etc/image-id", .content = "image app\n"});
  LayerChanges data = BigFilesLayer();
  data.files.push_back({.path = "/data/hello.txt", .content = "hello from a lazy layer\n"});
  app.AddLayer(base).AddLayer(data).AddLayer(DeletionsLayer()).SetCmd({"/bin/sh"});
  auto app_image = app.Build("v1");
  ASSERT_TRUE(app_image.ok()) << app_image.status();
  ASSERT_TRUE(registry_->PushOciLayout(app_image->layout_dir, "v1", "src-app:v1").ok());
  const std::string app_ref = registry_->host() + "/app:v1";
  ASSERT_TRUE(LazypullConvert("estargz", registry_->host() + "/src-app:v1", app_ref).ok());

  auto objects = RenderChart({"--namespace", "kube-system"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  const nlohmann::json pod = FindObject(*objects, "DaemonSet")["spec"]["template"]["spec"];
  const nlohmann::json container = pod["containers"][0];
  const std::string config_toml =
      FindObject(*objects, "ConfigMap")["data"]["config.toml"].get<std::string>();
  ASSERT_TRUE(WriteFile(dir_.Sub("configmap/config.toml"), config_toml).ok());

  ContainerdOptions copts;
  copts.proxy_snapshotter_socket = "/run/lazypull/lazypull.sock";
  copts.enable_cri = true;
  copts.cri_plugin_config = absl::StrCat("  sandbox_image = \"", registry_->host(), "/pause:v1\"");
  ASSERT_EQ(::mkdir(dir_.Sub("cd").c_str(), 0755), 0);
  auto cd = ContainerdProcess::Start(dir_.Sub("cd"), copts);
  ASSERT_TRUE(cd.ok()) << cd.status();
  containerd_ = std::move(*cd);

  // The DaemonSet's pod, by `ctr run`: its privileges, host mounts, command and args.
  auto pulled = containerd_->CtrOk({"-n", kSystemNs, "images", "pull", "--plain-http", image_ref},
                                   std::chrono::seconds(300));
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  std::vector<std::string> run = {"-n", kSystemNs,   "run",
                                  "-d", "--log-uri", "file://" + dir_.Sub("pod.log")};
  ASSERT_EQ(container["securityContext"]["privileged"], true);
  run.push_back("--privileged");
  if (pod.value("hostNetwork", false)) run.push_back("--net-host");
  bool bidirectional = false;
  for (const nlohmann::json& vm : container["volumeMounts"]) {
    const nlohmann::json volume = ByName(pod["volumes"], vm["name"]);
    std::string source;
    if (volume.contains("hostPath")) {
      source = volume["hostPath"]["path"];
      // The kubelet creates a DirectoryOrCreate hostPath (the FUSE holder's socket dir).
      if (volume["hostPath"].value("type", "") == "DirectoryOrCreate") {
        std::error_code mkdir_error;
        std::filesystem::create_directories(source, mkdir_error);
      }
    } else if (vm["name"] == "config") {
      source = dir_.Sub("configmap/") + vm["subPath"].get<std::string>();
    } else {
      FAIL() << "unexpected volume in the default DaemonSet: " << volume.dump();
    }
    std::string options = vm.value("readOnly", false) ? "rbind:ro" : "rbind:rw";
    if (vm.value("mountPropagation", "") == "Bidirectional") {
      options += ":rshared";
      bidirectional = true;
    }
    run.push_back(absl::StrCat("--mount=type=bind,src=", source,
                               ",dst=", vm["mountPath"].get<std::string>(), ",options=", options));
  }
  ASSERT_TRUE(bidirectional);
  run.push_back("--rootfs-propagation=rshared");
  // env and $(NAME) in command and args, as the kubelet sets them on this node.
  auto env = KubeletEnv(container);
  ASSERT_TRUE(env.ok()) << env.status();
  for (const auto& [name, value] : *env) run.push_back(absl::StrCat("--env=", name, "=", value));
  run.push_back(image_ref);
  run.push_back(kTask);
  for (const nlohmann::json& a : container["command"]) run.push_back(ExpandKubeletVars(a, *env));
  for (const nlohmann::json& a : container.value("args", nlohmann::json::array())) {
    run.push_back(ExpandKubeletVars(a, *env));
  }
  auto started = containerd_->CtrOk(run, std::chrono::seconds(60));
  ASSERT_TRUE(started.ok()) << started.status();

  // The startup probe, run in the container as the kubelet would.
  int n = 0;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto r = Probe(container, "startupProbe", ++n);
        return r.ok() && r->exit_code == 0 && absl::StartsWith(r->output, "ok: ");
      },
      std::chrono::seconds(60)))
      << *ReadFile(dir_.Sub("pod.log"));

  // containerd dialled /run/lazypull/lazypull.sock (its proxy snapshotter) at its own start,
  // before the container created it; its gRPC channel redials only after a backoff of up to a
  // few seconds, and a call in between fails at once with the last dial error ("timeout").
  // Wait until containerd itself reaches lazypull: a Prepare goes through to the backend (a
  // `snapshots ls` does not: containerd answers it from its own metadata).
  int probe = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string key = absl::StrCat("lazypull-reach-probe-", ++probe);
        auto r = containerd_->Ctr(
            {"-n", "k8s.io", "snapshots", "--snapshotter", "lazypull", "prepare", key},
            std::chrono::seconds(10));
        if (!r.ok() || r->exit_code != 0) return false;
        (void)containerd_->Ctr(
            {"-n", "k8s.io", "snapshots", "--snapshotter", "lazypull", "rm", key},
            std::chrono::seconds(10));
        return true;
      },
      std::chrono::seconds(60)));

  // The node's containerd pulls a lazy image through its CRI and runs it in a pod.
  CriClient cri(containerd_->address(), containerd_->address());
  grpc::Status s = cri.PullImage(app_ref, std::nullopt);
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << *ReadFile(dir_.Sub("pod.log"));
  auto resolved = ResolvePushed(app_ref);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  for (const oci::Descriptor& layer : resolved->resolved.manifest.layers) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          return LazyLayerDigests("/var/lib/lazypull/status.json")
              .contains(layer.digest.ToString());
        },
        std::chrono::seconds(20)))
        << "layer " << layer.digest.ToString() << " is not mounted lazily";
  }
  // Mounts made in the container are the node's (rshared).
  EXPECT_GE(CountMountsUnder("/var/lib/lazypull/snapshots/"), 3);
  ASSERT_TRUE(WriteFile(dir_.Sub("big.bin"), RandomBytes(1 << 20, 1)).ok());
  auto md5 = RunShell("md5sum " + dir_.Sub("big.bin") + " | cut -c1-32", std::chrono::seconds(10));
  ASSERT_TRUE(md5.ok());
  auto ran =
      cri.RunContainer("app-pod", app_ref, {"/bin/sh", "-c", kRunScript}, dir_.Sub("pod-logs"));
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(ran->exit_code, 0);
  EXPECT_EQ(ran->output, absl::StrCat("image app\nhello from a lazy layer\n", md5->output,
                                      "gone-is-gone\nkept.txt\nnew.txt\n"));
  auto live = Probe(container, "livenessProbe", ++n);
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->exit_code, 0) << live->output;

  // SIGTERM (what the kubelet sends): the daemon unmounts its layers and exits 0.
  ASSERT_TRUE(
      containerd_->CtrOk({"-n", kSystemNs, "task", "kill", "--signal", "SIGTERM", kTask}).ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto ls = containerd_->Ctr({"-n", kSystemNs, "task", "ls"});
        return ls.ok() && absl::StrContains(ls->output, "STOPPED");
      },
      std::chrono::seconds(60)));
  auto pod_log = ReadFile(dir_.Sub("pod.log"));
  ASSERT_TRUE(pod_log.ok());
  EXPECT_TRUE(absl::StrContains(*pod_log, "\"msg\":\"lazypull-snapshotter stopped\"")) << *pod_log;
  EXPECT_EQ(CountMountsUnder("/var/lib/lazypull/snapshots/"), 0);
}

}  // namespace
}  // namespace lazypull::testing
