// `lazypull convert --optimize` end to end with real parts: an image built with umoci and
// pushed to a real docker-registry, converted by the real CLI (which runs the image's own
// command with runc on an overlay of its layers and records opens with fanotify), checked
// with our readers and the reference Go eStargz verifier, then mounted lazily through the
// real daemon: the prefetch covers exactly the recorded files and the tree reads back exact.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/format/format_detector.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/registry/registry_client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/convert/convert_test_util.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

// The image's own command: env and working directory must be applied for it to open the
// right files.
const std::vector<std::string> kImageCmd = {"/bin/sh", "-c", "cat \"$CONF\" b.txt"};

// The daemon config for `backend` ("fuse" or "erofs"); `mount_extra` adds [mount] keys.
std::string DaemonConfig(const std::string& backend, const std::string& mount_extra) {
  return absl::StrCat("[mount]\nbackend = \"", backend, "\"\nfetch_timeout = \"10s\"\n",
                      mount_extra, "[remote]\nstatus_interval_ms = 100\n");
}

std::string Lazypull() { return BinaryDir() + "/bin/lazypull"; }

// Built once: the source image in a registry, its unpacked tree, and the reference tool.
struct Shared {
  TempDir dir{"lpoptim"};
  std::unique_ptr<RegistryProcess> registry;
  BuiltImage src;
  BuiltImage no_cmd;
  std::string rootfs;
  std::string estargz_ref;
  absl::Status status;
};
Shared* shared = nullptr;

absl::Status BuildShared(Shared& s) {
  auto reg = RegistryProcess::Start(s.dir.Sub("reg"));
  if (!reg.ok()) return reg.status();
  s.registry = std::move(*reg);
  ImageBuilder b(s.dir.Sub("image"));
  b.AddLayer(LayerChanges::Busybox());
  LayerChanges l1;
  l1.files = {{"/etc/a.conf", "a from layer 1\n"},
              {"/etc/unused.conf", "never read\n"},
              {"/data/b.txt", "old b, hidden by layer 2\n"},
              {"/data/unused.bin", RandomBytes(200000, 7)}};
  b.AddLayer(l1);
  LayerChanges l2;
  l2.files = {{"/data/b.txt", "b from layer 2\n"}, {"/data/c.txt", "c\n"}};
  l2.deletions = {"/etc/unused.conf"};
  b.AddLayer(l2);
  b.AddEnv("CONF=/etc/a.conf");
  b.SetWorkingDir("/data");
  b.SetCmd(kImageCmd);
  auto built = b.Build("v1");
  if (!built.ok()) return built.status();
  s.src = *built;
  if (auto st = s.registry->PushOciLayout(s.src.layout_dir, "v1", "src:v1"); !st.ok()) return st;
  ImageBuilder nc(s.dir.Sub("nocmd"));
  nc.AddLayer(LayerChanges::Busybox());
  auto no_cmd = nc.Build("v1");
  if (!no_cmd.ok()) return no_cmd.status();
  s.no_cmd = *no_cmd;
  auto rootfs = UnpackRootfs(s.src.layout_dir, "v1", s.dir.Sub("unpacked"));
  if (!rootfs.ok()) return rootfs.status();
  s.rootfs = *rootfs;
  auto tool = BuildEstargzRef(s.dir.path());
  if (!tool.ok()) return tool.status();
  s.estargz_ref = *tool;
  return absl::OkStatus();
}

// Mount entries (in this namespace) whose mount point is at or below `dir`.
std::vector<std::string> MountsUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 4 && absl::StartsWith(f[4], dir)) out.push_back(f[4]);
  }
  return out;
}

class OptimizeE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared = new Shared;
    shared->status = BuildShared(*shared);
  }
  static void TearDownTestSuite() {
    delete shared;
    shared = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(shared->status.ok()) << shared->status; }
  void TearDown() override { StopDaemon(); }

  void StopDaemon() {
    mounts_.clear();
    client_.reset();
    if (daemon_ != nullptr) {
      EXPECT_EQ(daemon_->Stop(), absl::OkStatus());
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
    }
    daemon_.reset();
  }

  // Runs `lazypull convert` with `args` (before SRC DST); returns its output.
  CommandResult Convert(const std::vector<std::string>& args, const std::string& src,
                        const std::string& dst) {
    std::vector<std::string> argv = {Lazypull(), "--log-level", "warn", "convert"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(src);
    argv.push_back(dst);
    auto r = RunCommand(argv, std::chrono::seconds(300));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  }

  std::string Host() const { return shared->registry->host(); }

  // What `-v` prints for the expected recording, layer by layer.
  std::string ExpectedListing() const {
    const auto& l = shared->src.layer_digests;
    return absl::StrCat("optimize: layer ", l[0], ": 1 files prioritized\n  /bin/busybox\n",
                        "optimize: layer ", l[1], ": 1 files prioritized\n  /etc/a.conf\n",
                        "optimize: layer ", l[2], ": 1 files prioritized\n  /data/b.txt\n");
  }

  // Converts src:v1 with --optimize into `repo`:v1 and checks each converted layer: its
  // prefetch range holds exactly the recorded files of that layer, and the config's diff_ids
  // are the converted tars'.
  void ConvertOptimizedAndCheck(const std::string& format, const std::string& repo) {
    CommandResult r = Convert({"--format", format, "--plain-http", "--optimize", "-v"},
                              Host() + "/src:v1", Host() + "/" + repo + ":v1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(absl::StrContains(
        r.output, "optimize: ran [/bin/sh -c cat \"$CONF\" b.txt] (exit status 0): 3 files opened"))
        << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, ExpectedListing())) << r.output;

    auto pushed = ResolvePushed(Host() + "/" + repo + ":v1");
    ASSERT_TRUE(pushed.ok()) << pushed.status();
    image_ = *pushed;
    const auto& layers = image_.resolved.manifest.layers;
    ASSERT_EQ(layers.size(), 3u);
    registry::RegistryClient rc(registry::RegistryConfig{}, registry::NewCurlTransport());
    auto ref = registry::ParseReference(image_.ref);
    ASSERT_TRUE(ref.ok());
    auto config_bytes = rc.FetchBlob(*ref, image_.resolved.manifest.config);
    ASSERT_TRUE(config_bytes.ok());
    auto config = oci::ImageConfig::Parse(*config_bytes);
    ASSERT_TRUE(config.ok());
    const std::vector<std::set<std::string>> recorded = {
        {"bin/busybox"}, {"etc/a.conf"}, {"data/b.txt"}};
    for (size_t i = 0; i < layers.size(); ++i) {
      SCOPED_TRACE("layer " + std::to_string(i));
      auto blob = rc.FetchBlob(*ref, layers[i]);
      ASSERT_TRUE(blob.ok()) << blob.status();
      std::string path = dir_.Sub(repo + "-" + std::to_string(i));
      ASSERT_TRUE(WriteFile(path, *blob).ok());
      // The config's diff_id is the converted tar's (for zstd:chunked too, whose reordering
      // changes it unless the recorded files came first already).
      std::string unpack = format == "estargz" ? "gzip -dc" : "zstd -dc";
      auto sum = RunShell(unpack + " < " + path + " | sha256sum | cut -d' ' -f1");
      ASSERT_TRUE(sum.ok());
      EXPECT_EQ(sum->output, config->diff_ids()[i].hex() + "\n");
      if (format == "zstd:chunked") {
        EXPECT_TRUE(absl::StartsWith(
            layers[i].Annotation(convert::kLazypullPrefetchRangeAnnotation), "0:"));
      }
      auto reader = NewStringBlobReader(*blob);
      auto index = format::OpenLayerIndex(*reader, layers[i].media_type, layers[i].annotations);
      ASSERT_TRUE(index.ok()) << index.status();
      ASSERT_TRUE(index->prefetch_range().has_value());
      EXPECT_EQ(index->prefetch_range()->offset, 0u);
      const uint64_t end = index->prefetch_range()->end();
      std::set<format::Ino> inside;
      for (const std::string& p : recorded[i]) {
        auto ino = index->LookupPath(p);
        ASSERT_TRUE(ino.has_value()) << p;
        inside.insert(*ino);
        ASSERT_FALSE(index->Chunks(*ino).empty()) << p;
        for (const format::Chunk& c : index->Chunks(*ino)) {
          EXPECT_LE(c.compressed_offset + c.compressed_length, end) << p;
        }
      }
      for (format::Ino ino = 1; ino <= index->inode_count(); ++ino) {
        if (inside.count(ino)) continue;
        for (const format::Chunk& c : index->Chunks(ino)) {
          if (c.compression == format::ChunkCompression::kZeros) continue;
          EXPECT_GE(c.compressed_offset, end) << "inode " << ino << " is prefetched";
        }
      }
      if (format == "estargz") {
        // The reference implementation accepts the layer, landmark included.
        auto v = RunCommand({shared->estargz_ref, "verify", path,
                             layers[i].Annotation(convert::kEstargzTocDigestAnnotation)},
                            std::chrono::seconds(120));
        ASSERT_TRUE(v.ok());
        EXPECT_EQ(v->exit_code, 0) << v->output;
        EXPECT_TRUE(absl::StrContains(v->output, ".prefetch.landmark\t1\t")) << v->output;
        for (const std::string& p : recorded[i]) {
          EXPECT_TRUE(absl::StrContains(v->output, p + "\t")) << v->output;
        }
      }
    }
  }

  // Starts a daemon with `config` (behind a fresh fault proxy), prepares image_'s layers with
  // remote labels and mounts a container snapshot on them; returns the mount point.
  std::string StartDaemonAndMount(const std::string& name, const std::string& config,
                                  bool cri_labels) {
    StopDaemon();
    auto proxy = FaultProxy::Start(shared->registry->port());
    EXPECT_TRUE(proxy.ok()) << proxy.status();
    if (!proxy.ok()) return "";
    proxy_ = std::move(*proxy);
    SnapshotterOptions options;
    options.config_toml = config;
    auto d = SnapshotterProcess::Start(dir_.Sub("daemon-" + name), options);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return "";
    daemon_ = std::move(*d);
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
    auto image = ResolvePushed(proxy_->host() + image_.ref.substr(image_.ref.find('/')));
    EXPECT_TRUE(image.ok()) << image.status();
    if (!image.ok()) return "";
    std::string parent;
    for (size_t i = 0; i < image->resolved.manifest.layers.size(); ++i) {
      std::string target = "layer-" + std::to_string(i);
      auto labels = cri_labels ? CriLabels(*image, i, target) : StargzLabels(*image, i, target);
      grpc::Status s = client_->Prepare("extract-" + std::to_string(i), parent, labels);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
      parent = target;
    }
    MountList mounts;
    grpc::Status s = client_->Prepare("container", parent, {}, &mounts);
    EXPECT_TRUE(s.ok()) << s.error_message();
    const std::string mnt = dir_.Sub("mnt-" + name);
    EXPECT_EQ(::mkdir(mnt.c_str(), 0755), 0);
    auto m = ScopedMount::Mount(mounts, mnt);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return "";
    mounts_.push_back(std::move(*m));
    return mnt;
  }

  // Waits (bounded) until status.json shows 3 layers satisfying `pred`.
  bool WaitLayers(const std::function<bool(const nlohmann::json&)>& pred, nlohmann::json* last) {
    for (int i = 0; i < 600; ++i) {
      auto text = ReadFile(daemon_->root() + "/status.json");
      *last = text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
      size_t n = 0;
      if (last->is_object() && last->contains("layers")) {
        for (const auto& l : (*last)["layers"]) n += pred(l) ? 1 : 0;
      }
      if (n == 3) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Mounts image_ lazily on `backend` (no background fetch): once every layer's prefetch is
  // done, the recorded files read back without a single registry request; the whole tree then
  // equals the source image's.
  void MountLazilyAndCheck(const std::string& backend, bool cri_labels) {
    SCOPED_TRACE(backend);
    const std::string mnt = StartDaemonAndMount(
        backend, DaemonConfig(backend, "background_fetch = false\n"), cri_labels);
    ASSERT_FALSE(mnt.empty());
    // Every layer reports its prefetch done (status.json is rewritten every 100 ms).
    nlohmann::json status;
    ASSERT_TRUE(WaitLayers(
        [&](const nlohmann::json& l) {
          return l.value("prefetch", "") == "done" && l.value("backend", "") == backend;
        },
        &status))
        << status.dump(1);
    proxy_->ClearRequests();
    EXPECT_EQ(*ReadFile(mnt + "/etc/a.conf"), "a from layer 1\n");
    EXPECT_EQ(*ReadFile(mnt + "/data/b.txt"), "b from layer 2\n");
    auto busybox = ReadFile(mnt + "/bin/busybox");
    ASSERT_TRUE(busybox.ok());
    EXPECT_EQ(*busybox, *ReadFile(shared->rootfs + "/bin/busybox"));
    auto blob_gets = [this] {
      std::vector<std::string> out;
      for (const RecordedRequest& r : proxy_->Requests()) {
        if (absl::StrContains(r.target, "/blobs/")) out.push_back(r.target);
      }
      return out;
    };
    EXPECT_EQ(blob_gets(), std::vector<std::string>{}) << "recorded files fetched after prefetch";
    // Control: a file the command did not open is fetched on demand.
    EXPECT_EQ(*ReadFile(mnt + "/data/c.txt"), "c\n");
    EXPECT_FALSE(blob_gets().empty());
    std::vector<std::string> diffs = CompareTrees(shared->rootfs, mnt);
    EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  }

  // EROFS with background fetch: the reordered layers are fetched whole and graduate to local
  // copies of their tars (checked against the config's diff_ids); the tree stays exact.
  void GraduateAndCheck(bool cri_labels) {
    const std::string mnt =
        StartDaemonAndMount("graduation",
                            DaemonConfig("erofs",
                                         "background_fetch = true\nbackground_silence = \"100ms\"\n"
                                         "background_quiet = \"10ms\"\nbackground_bandwidth = 0\n"),
                            cri_labels);
    ASSERT_FALSE(mnt.empty());
    nlohmann::json status;
    ASSERT_TRUE(
        WaitLayers([](const nlohmann::json& l) { return l.value("graduated", false); }, &status))
        << status.dump(1);
    std::vector<std::string> diffs = CompareTrees(shared->rootfs, mnt);
    EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  }

  TempDir dir_{"lpopt-case"};
  PushedImage image_;
  std::unique_ptr<FaultProxy> proxy_;
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
  std::vector<std::unique_ptr<ScopedMount>> mounts_;
};

TEST_F(OptimizeE2eTest, EstargzRecordsTheImageCommandsFilesAndMountsWithTheirPrefetch) {
  ConvertOptimizedAndCheck("estargz", "esgz-opt");
  MountLazilyAndCheck("fuse", /*cri_labels=*/false);
  MountLazilyAndCheck("erofs", /*cri_labels=*/false);
  GraduateAndCheck(/*cri_labels=*/false);
}

TEST_F(OptimizeE2eTest, ZstdChunkedRecordsTheImageCommandsFilesAndMountsWithTheirPrefetch) {
  ConvertOptimizedAndCheck("zstd:chunked", "zc-opt");
  MountLazilyAndCheck("fuse", /*cri_labels=*/true);
  MountLazilyAndCheck("erofs", /*cri_labels=*/true);
  GraduateAndCheck(/*cri_labels=*/true);
}

// Reordered layers stay plain tar streams any client unpacks: a stock containerd (overlayfs
// snapshotter, full pull, DiffIDs checked) pulls and runs both optimized images.
TEST_F(OptimizeE2eTest, StockContainerdPullsAndRunsOptimizedImages) {
  std::string work = dir_.Sub("containerd");
  ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
  auto ctrd = ContainerdProcess::Start(work);
  ASSERT_TRUE(ctrd.ok()) << ctrd.status();
  for (const std::string format : {"estargz", "zstd:chunked"}) {
    const std::string repo = format == "estargz" ? "esgz-run" : "zc-run";
    const std::string ref = Host() + "/" + repo + ":v1";
    CommandResult r =
        Convert({"--format", format, "--plain-http", "--optimize"}, Host() + "/src:v1", ref);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto pulled = (*ctrd)->CtrOk({"-n", repo, "images", "pull", "--plain-http", ref},
                                 std::chrono::seconds(180));
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    auto out = (*ctrd)->CtrOk({"-n", repo, "run", "--rm", ref, repo, "/bin/sh", "-c",
                               "cat /etc/a.conf /data/b.txt; ls /data; "
                               "test -e /etc/unused.conf || echo deleted"},
                              std::chrono::seconds(120));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, "a from layer 1\nb from layer 2\nb.txt\nc.txt\nunused.bin\ndeleted\n")
        << format;
  }
}

// --optimize-cmd replaces the image's command; an OCI layout works as well as a registry.
TEST_F(OptimizeE2eTest, OptimizeCmdOverridesTheImageCommand) {
  CommandResult r = Convert({"--format", "estargz", "--optimize", "-v", "--optimize-cmd",
                             "/bin/sh -c 'cat /data/c.txt /etc/a.conf > /dev/null'"},
                            shared->src.OciReference(), "oci:" + dir_.Sub("out") + ":o");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto& l = shared->src.layer_digests;
  EXPECT_TRUE(absl::StrContains(
      r.output, absl::StrCat("optimize: layer ", l[0], ": 1 files prioritized\n  /bin/busybox\n",
                             "optimize: layer ", l[1], ": 1 files prioritized\n  /etc/a.conf\n",
                             "optimize: layer ", l[2], ": 1 files prioritized\n  /data/c.txt\n")))
      << r.output;
}

// Bad input: a command that does not exist is a clear error; a command that runs into the
// timeout is killed and what it opened until then is used. Nothing is left behind either way.
TEST_F(OptimizeE2eTest, MissingCommandFailsAndTimeoutKeepsAPartialRecordingWithoutLeaks) {
  const std::string work = dir_.Sub("work");
  ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
  CommandResult missing = Convert({"--format", "estargz", "--optimize", "--work-dir", work,
                                   "--optimize-cmd", "/no/such/program --flag"},
                                  shared->src.OciReference(), "oci:" + dir_.Sub("out") + ":m");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_TRUE(absl::StrContains(missing.output, "FAILED_PRECONDITION")) << missing.output;
  EXPECT_TRUE(absl::StrContains(missing.output, "/no/such/program: no such file or directory"))
      << missing.output;
  EXPECT_EQ(ListDir(work), std::vector<std::string>{});
  EXPECT_EQ(MountsUnder(work), std::vector<std::string>{});

  CommandResult slow = Convert(
      {"--format", "zstd:chunked", "--optimize", "-v", "--work-dir", work, "--optimize-timeout",
       "2s", "--optimize-cmd", "/bin/sh -c 'cat /etc/a.conf; sleep 77; cat /data/b.txt'"},
      shared->src.OciReference(), "oci:" + dir_.Sub("out") + ":t");
  ASSERT_EQ(slow.exit_code, 0) << slow.output;
  EXPECT_TRUE(absl::StrContains(slow.output, "(killed after the timeout of 2000 ms): 2 files"))
      << slow.output;
  const auto& l = shared->src.layer_digests;
  EXPECT_TRUE(absl::StrContains(
      slow.output, absl::StrCat("optimize: layer ", l[0], ": 1 files prioritized\n  /bin/busybox\n",
                                "optimize: layer ", l[1], ": 1 files prioritized\n  /etc/a.conf\n",
                                "optimize: layer ", l[2], ": 0 files prioritized\n")))
      << slow.output;
  EXPECT_EQ(ListDir(work), std::vector<std::string>{});
  EXPECT_EQ(MountsUnder(work), std::vector<std::string>{});
  auto sleeping = RunShell("ps -eo args | grep -cx 'sleep 77'");
  ASSERT_TRUE(sleeping.ok());
  EXPECT_EQ(sleeping->output, "0\n") << "the timed-out container process survived";

  CommandResult no_cmd = Convert({"--format", "estargz", "--optimize"},
                                 shared->no_cmd.OciReference(), "oci:" + dir_.Sub("out") + ":n");
  EXPECT_EQ(no_cmd.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(no_cmd.output, "neither Entrypoint nor Cmd")) << no_cmd.output;
}

// SIGTERM while the container runs: lazypull kills it, unmounts and cleans up, then fails.
TEST_F(OptimizeE2eTest, SigtermDuringTheRunCleansUpEverything) {
  const std::string work = dir_.Sub("work");
  ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
  auto p = Subprocess::Start({Lazypull(), "--log-level", "warn", "convert", "--format", "estargz",
                              "--optimize", "--work-dir", work, "--optimize-timeout", "5m",
                              "--optimize-cmd", "/bin/sh -c 'cat /etc/a.conf; sleep 78'",
                              shared->src.OciReference(), "oci:" + dir_.Sub("out") + ":s"},
                             dir_.Sub("lazypull.log"));
  ASSERT_TRUE(p.ok()) << p.status();
  // Wait (bounded) until the container's program runs.
  bool running = false;
  for (int i = 0; i < 600 && !running; ++i) {
    auto ps = RunShell("ps -eo args | grep -cx 'sleep 78'");
    running = ps.ok() && ps->output == "1\n";
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(running) << p->ReadLog();
  EXPECT_FALSE(MountsUnder(work).empty());
  p->Signal(SIGTERM);
  auto status = p->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status << p->ReadLog();
  EXPECT_TRUE(absl::StrContains(p->ReadLog(), "CANCELLED: interrupted by signal 15"))
      << p->ReadLog();
  EXPECT_EQ(ListDir(work), std::vector<std::string>{});
  EXPECT_EQ(MountsUnder(work), std::vector<std::string>{});
  auto sleeping = RunShell("ps -eo args | grep -cx 'sleep 78'");
  ASSERT_TRUE(sleeping.ok());
  EXPECT_EQ(sleeping->output, "0\n");
}

}  // namespace
}  // namespace lazypull::testing
