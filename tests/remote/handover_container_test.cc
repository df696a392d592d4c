// Issue 20 with real containers: containerd (a private instance) runs containers on lazily
// pulled layers (FUSE backend, background fetch off, so nothing becomes local) while the
// daemon is SIGKILLed and restarted ten times, then upgraded twice without a kill: once as a
// Kubernetes DaemonSet with maxSurge does it (a --takeover successor, then SIGTERM), once as
// systemd's `systemctl reload` does it (SIGHUP). The lazypull-fuse-holder keeps the FUSE
// connections; every new daemon adopts them.
//
// Two containers loop over their files, reading each with O_DIRECT (so every pass reaches the
// daemon, not the page cache) and comparing its SHA-256 with the one the test computed from
// the image's bytes: one reads a 64 MiB file, the other 64 small files of two layers. Each
// appends a line per pass to a log in a bind-mounted directory, and a line per read error or
// wrong hash to another. Expected: no such line, every pass counter moving under every new
// daemon, both tasks RUNNING at the end, and a container started after the last upgrade sees
// exact contents.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lazypull/digest.h"
#include "mount/fuse/holder_client.h"
#include "mount/fuse/stale_mounts.h"
#include "nlohmann/json.hpp"
#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"

namespace lazypull::testing {
namespace {

constexpr size_t kBigSize = 64 << 20;
constexpr int kSmallFiles = 64;
constexpr int kKills = 10;
constexpr char kNamespace[] = "handover";

std::string Sha256Hex(std::string_view data) { return Digest::Of(data).ToString().substr(7); }

// The loop every container runs: each pass reads every file of /cfg/<list> (one path a line)
// with O_DIRECT and compares the SHA-256 of their concatenation with /cfg/<list>.sha256 (one
// dd per file and one sha256sum per pass: the pass rate is bounded by process starts).
std::string ReaderScript(const std::string& id, const std::string& list) {
  const std::string out = "/out/" + id;
  return absl::StrCat("n=0; while :; do n=$((n+1)); rm -f ", out, ".fail; ",
                      "s=$(while read f; do dd if=\"$f\" bs=1M iflag=direct 2>", out,
                      ".err || echo \"$f: $(tr '\\n' ' ' <", out, ".err)\" >>", out,
                      ".fail; done </cfg/", list, " | sha256sum | cut -c1-64); ", "if [ -e ", out,
                      ".fail ]; then echo \"read error, pass $n: $(cat ", out, ".fail)\" >>", out,
                      ".bad; ", "elif [ \"$s\" != \"$(cat /cfg/", list, ".sha256)\" ]; then ",
                      "echo \"wrong hash, pass $n: $s\" >>", out, ".bad; fi; ", "echo $n >>", out,
                      ".passes; done");
}

class HandoverContainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The image: busybox; the 64 MiB file; the small files over two layers.
    ImageBuilder builder(dir_.Sub("image"));
    builder.AddLayer(LayerChanges::Busybox());
    std::string big = RandomBytes(kBigSize, 20);
    LayerChanges big_layer;
    big_layer.files.push_back({.path = "/data/big.bin", .content = big});
    builder.AddLayer(big_layer);
    LayerChanges small_a, small_b;
    std::string small_all, small_paths;
    for (int i = 0; i < kSmallFiles; ++i) {
      std::string path = absl::StrCat("/small/f", 1000 + i);
      std::string content = RandomBytes(512 + (i * 7919) % (48 << 10), 100 + i);
      small_all += content;
      (i % 2 == 0 ? small_a : small_b).files.push_back({.path = path, .content = content});
      small_list_ += absl::StrCat(path, " ", Sha256Hex(content), "\n");
      small_paths += path + "\n";
    }
    builder.AddLayer(small_a);
    builder.AddLayer(small_b);
    builder.SetCmd({"/bin/sh"});
    auto image = builder.Build("v1");
    ASSERT_TRUE(image.ok()) << image.status();
    const std::string big_sha256 = Sha256Hex(big);
    big_list_ = absl::StrCat("/data/big.bin ", big_sha256, "\n");
    big.clear();

    auto registry = RegistryProcess::Start(dir_.Sub("registry"));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
    ASSERT_TRUE(registry_->PushOciLayout(image->layout_dir, "v1", "src:v1").ok());
    ref_ = registry_->host() + "/esgz:v1";
    ASSERT_TRUE(LazypullConvert("estargz", registry_->host() + "/src:v1", ref_).ok());

    ASSERT_TRUE(WriteFile(dir_.Sub("cfg/big.list"), "/data/big.bin\n").ok());
    ASSERT_TRUE(WriteFile(dir_.Sub("cfg/big.list.sha256"), big_sha256 + "\n").ok());
    ASSERT_TRUE(WriteFile(dir_.Sub("cfg/small.list"), small_paths).ok());
    ASSERT_TRUE(WriteFile(dir_.Sub("cfg/small.list.sha256"), Sha256Hex(small_all) + "\n").ok());
    ASSERT_EQ(::mkdir(dir_.Sub("out").c_str(), 0755), 0);

    // The holder on the daemon root's default socket, started before the daemon.
    ASSERT_EQ(::mkdir(dir_.Sub("lp").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dir_.Sub("lp/root").c_str(), 0700), 0);
    const std::string holder_socket = dir_.Sub("lp/root/fuse-holder.sock");
    auto holder =
        Subprocess::Start({BinaryDir() + "/bin/lazypull-fuse-holder", "--socket", holder_socket},
                          dir_.Sub("holder.log"));
    ASSERT_TRUE(holder.ok()) << holder.status();
    holder_ = std::move(*holder);
    ASSERT_TRUE(WaitUntil([&] { return mount::FuseHolderClient::Connect(holder_socket).ok(); }))
        << holder_.ReadLog();

    SnapshotterOptions sopts;
    sopts.log_level = "info";
    sopts.config_toml =
        "[mount]\nbackend = \"fuse\"\nbackground_fetch = false\n"
        "[remote]\nstatus_interval_ms = 200\n";
    auto snapshotter = SnapshotterProcess::Start(dir_.Sub("lp"), sopts);
    ASSERT_TRUE(snapshotter.ok()) << snapshotter.status();
    daemon_ = std::move(*snapshotter);
    ContainerdOptions options;
    options.proxy_snapshotter_socket = daemon_->socket();
    ASSERT_EQ(::mkdir(dir_.Sub("cd").c_str(), 0755), 0);
    auto containerd = ContainerdProcess::Start(dir_.Sub("cd"), options);
    ASSERT_TRUE(containerd.ok()) << containerd.status();
    containerd_ = std::move(*containerd);
  }

  void TearDown() override {
    if (containerd_ != nullptr) {
      EXPECT_EQ(containerd_->Stop(), absl::OkStatus());
    }
    // Without the holder, the daemon unmounts at its stop instead of handing over.
    holder_.Kill();
    if (daemon_ != nullptr) {
      if (HasFailure()) std::cerr << "--- snapshotter log ---\n" << daemon_->ReadLog();
      EXPECT_EQ(daemon_->Stop(), absl::OkStatus());
    }
    if (HasFailure()) std::cerr << "--- holder log ---\n" << holder_.ReadLog();
    auto left = mount::MountsUnder(dir_.path());
    if (left.ok()) {
      for (const auto& m : *left) ::umount2(m.path.c_str(), MNT_DETACH);
    }
  }

  absl::StatusOr<std::string> Ctr(const std::vector<std::string>& args) {
    std::vector<std::string> full = {"-n", kNamespace};
    full.insert(full.end(), args.begin(), args.end());
    return containerd_->CtrOk(full);
  }

  void RunReader(const std::string& id, const std::string& list) {
    auto out = Ctr({"run", "-d", "--snapshotter", "lazypull", "--mount",
                    "type=bind,src=" + dir_.Sub("cfg") + ",dst=/cfg,options=rbind:ro", "--mount",
                    "type=bind,src=" + dir_.Sub("out") + ",dst=/out,options=rbind:rw", ref_, id,
                    "/bin/sh", "-c", ReaderScript(id, list)});
    ASSERT_TRUE(out.ok()) << out.status();
  }

  // Completed passes of container `id`.
  size_t Passes(const std::string& id) {
    auto text = ReadFile(dir_.Sub("out/" + id + ".passes"));
    return text.ok() ? static_cast<size_t>(std::count(text->begin(), text->end(), '\n')) : 0;
  }

  // Waits until every reader completed two more passes (so the current daemon served one
  // whole pass at least), then checks that none saw a read error or a wrong hash.
  void ExpectReadersProgress(const std::string& when) {
    std::map<std::string, size_t> start;
    for (const char* id : {"big", "small"}) start[id] = Passes(id);
    EXPECT_TRUE(WaitUntil(
        [&] {
          for (const auto& [id, n] : start) {
            if (Passes(id) < n + 2) return false;
          }
          return true;
        },
        std::chrono::seconds(120)))
        << "readers stalled " << when << ": big " << Passes("big") << ", small " << Passes("small");
    for (const char* id : {"big", "small"}) {
      EXPECT_FALSE(std::filesystem::exists(dir_.Sub(absl::StrCat("out/", id, ".bad"))))
          << when << ": " << ReadFile(dir_.Sub(absl::StrCat("out/", id, ".bad"))).value_or("");
    }
  }

  void ExpectTasksRunning(const std::string& when) {
    auto tasks = Ctr({"tasks", "ls"});
    ASSERT_TRUE(tasks.ok()) << tasks.status();
    size_t running = 0;
    for (absl::string_view line : absl::StrSplit(*tasks, '\n')) {
      running += absl::StrContains(line, "RUNNING") ? 1 : 0;
    }
    EXPECT_EQ(running, 2u) << when << ":\n" << *tasks;
  }

  // Every lazy layer in the current daemon's status.json was adopted from the holder.
  void ExpectAllAdopted(size_t layers) {
    nlohmann::json status;
    EXPECT_TRUE(WaitUntil([&] {
      auto text = ReadFile(daemon_->root() + "/status.json");
      status = text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
      return status.is_object() && status.value("pid", 0) == daemon_->pid() &&
             status.contains("layers") && status["layers"].size() == layers;
    })) << status.dump();
    if (!status.is_object() || !status.contains("layers")) return;
    for (const auto& l : status["layers"]) EXPECT_TRUE(l.value("adopted", false)) << l.dump();
  }

  TempDir dir_{"lphc"};
  std::unique_ptr<RegistryProcess> registry_;
  Subprocess holder_;
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<ContainerdProcess> containerd_;
  std::string ref_, big_list_, small_list_;
};

TEST_F(HandoverContainerTest, ContainersReadOnThroughKillsAndUpgrades) {
  auto pulled = RunCommand({"ctr-remote", "--address", containerd_->address(), "-n", kNamespace,
                            "images", "rpull", "--snapshotter", "lazypull", "--plain-http", ref_},
                           std::chrono::seconds(180));
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
  const size_t layers = LazyLayerDigests(daemon_->root() + "/status.json").size();
  ASSERT_EQ(layers, 4u) << ReadFile(daemon_->root() + "/status.json").value_or("");

  ASSERT_NO_FATAL_FAILURE(RunReader("big", "big.list"));
  ASSERT_NO_FATAL_FAILURE(RunReader("small", "small.list"));
  ExpectReadersProgress("before any kill");

  for (int i = 1; i <= kKills; ++i) {
    const std::string when = absl::StrCat("after kill ", i);
    daemon_->Kill();
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    ExpectReadersProgress(when);
    ExpectTasksRunning(when);
    if (HasFailure()) return;
  }
  ExpectAllAdopted(layers);

  ASSERT_TRUE(daemon_->Upgrade().ok()) << daemon_->ReadLog();  // --takeover, then SIGTERM
  ExpectReadersProgress("after the takeover upgrade");
  ExpectAllAdopted(layers);
  ASSERT_TRUE(daemon_->UpgradeBySighup().ok()) << daemon_->ReadLog();  // systemctl reload
  ExpectReadersProgress("after the SIGHUP upgrade");
  ExpectAllAdopted(layers);
  ExpectTasksRunning("at the end");

  // A container started now reads exact contents.
  std::string expected;
  for (const std::string& list : {big_list_, small_list_}) {
    for (absl::string_view line : absl::StrSplit(list, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      expected += absl::StrCat(f[1], "  ", f[0], "\n");
    }
  }
  auto fresh = Ctr({"run", "--rm", "--snapshotter", "lazypull", ref_, "fresh", "/bin/sh", "-c",
                    "sha256sum /data/big.bin /small/*"});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(*fresh, expected);
  ExpectTasksRunning("after the new container");
}

}  // namespace
}  // namespace lazypull::testing
