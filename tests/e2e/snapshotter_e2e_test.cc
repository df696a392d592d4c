// End to end with real parts (issue 2): a docker-registry on 127.0.0.1, a private containerd
// (Debian) with lazypull as a proxy snapshotter, runc, and an image the test builds itself.
// `ctr images pull/run --snapshotter lazypull` must work, a container's writes must land in the
// snapshot's upper dir under the lazypull root, and `ctr snapshots` must behave exactly as with
// containerd's built-in overlayfs on the same image.
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

// GC right after every deletion, so a `ctr snapshots rm` reaches the backend within a second.
constexpr char kFastGcConfig[] =
    "[plugins.\"io.containerd.gc.v1.scheduler\"]\n"
    "  deletion_threshold = 1\n"
    "  startup_delay = \"10ms\"\n";

constexpr char kRunScript[] =
    "cat /data/hello.txt; ls /data; test -e /data/gone.txt || echo gone-is-gone; "
    "printf 'written by the container' > /written.txt";
constexpr char kRunOutput[] = "hello from layer 2\nhello.txt\nsub\ngone-is-gone\n";

// Directories below <root>/snapshots: one per snapshot the backend holds.
int CountSnapshotDirs(const std::string& snapshots_dir) {
  DIR* d = opendir(snapshots_dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != ".." && e->d_type == DT_DIR) ++n;
  }
  closedir(d);
  return n;
}

// Waits until `snapshots_dir` holds exactly `want` snapshot dirs; returns the last count.
int WaitForSnapshotDirs(const std::string& snapshots_dir, int want) {
  int n = -1;
  for (int i = 0; i < 200; ++i) {
    n = CountSnapshotDirs(snapshots_dir);
    if (n == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return n;
}

// Drops the "Created"/"Updated" lines of `ctr snapshots info` JSON (times differ per run).
std::string StripTimestamps(const std::string& info) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    if (line.find("\"Created\"") != absl::string_view::npos ||
        line.find("\"Updated\"") != absl::string_view::npos) {
      continue;
    }
    out.append(line.data(), line.size());
    out += '\n';
  }
  return out;
}

// Rewrites `<snapshots_dir>/<id>/` to `S<k>/`, k numbering ids by first appearance, so mount
// options of two snapshotters with different roots and ids compare equal.
std::string NormalizeSnapshotPaths(const std::string& text, const std::string& snapshots_dir) {
  std::map<std::string, int> ids;
  std::string out;
  size_t pos = 0;
  const std::string prefix = snapshots_dir + "/";
  while (true) {
    size_t hit = text.find(prefix, pos);
    if (hit == std::string::npos) break;
    out.append(text, pos, hit - pos);
    size_t id_start = hit + prefix.size();
    size_t id_end = text.find('/', id_start);
    if (id_end == std::string::npos) id_end = text.size();
    std::string id = text.substr(id_start, id_end - id_start);
    auto [it, inserted] = ids.emplace(id, static_cast<int>(ids.size()) + 1);
    out += "S" + std::to_string(it->second);
    pos = id_end;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

// Value of `key=` in the comma-separated options of a `ctr snapshots mounts` line.
std::string MountOption(const std::string& mount_line, const std::string& key) {
  std::smatch m;
  std::regex re("[ ,]" + key + "=([^,\\s]+)");
  if (std::regex_search(mount_line, m, re)) return m[1];
  return "";
}

class SnapshotterE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ImageBuilder builder(dir_.Sub("image"));
    builder.AddLayer(LayerChanges::Busybox());
    LayerChanges data;
    data.files = {{"/data/hello.txt", "hello from layer 1\n"},
                  {"/data/gone.txt", "deleted in layer 2\n"},
                  {"/data/sub/nested.bin", std::string(100000, 'x')}};
    builder.AddLayer(data);
    LayerChanges update;
    update.deletions = {"/data/gone.txt"};
    update.files = {{"/data/hello.txt", "hello from layer 2\n", 0600}};
    builder.AddLayer(update);
    builder.SetCmd({"/bin/sh"});
    auto image = builder.Build("v1");
    ASSERT_TRUE(image.ok()) << image.status();
    image_ = *image;

    auto registry = RegistryProcess::Start(dir_.Sub("registry"));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
    ASSERT_TRUE(registry_->PushOciLayout(image_.layout_dir, "v1", "e2e/app:v1").ok());
    ref_ = registry_->host() + "/e2e/app:v1";

    ASSERT_EQ(mkdir(dir_.Sub("lp").c_str(), 0755), 0);
    auto snapshotter = SnapshotterProcess::Start(dir_.Sub("lp"));
    ASSERT_TRUE(snapshotter.ok()) << snapshotter.status();
    snapshotter_ = std::move(*snapshotter);

    ContainerdOptions options;
    options.proxy_snapshotter_socket = snapshotter_->socket();
    options.extra_config = kFastGcConfig;
    ASSERT_EQ(mkdir(dir_.Sub("cd").c_str(), 0755), 0);
    auto containerd = ContainerdProcess::Start(dir_.Sub("cd"), options);
    ASSERT_TRUE(containerd.ok()) << containerd.status();
    containerd_ = std::move(*containerd);
  }

  void TearDown() override {
    if (containerd_) EXPECT_TRUE(containerd_->Stop().ok()) << containerd_->ReadLog();
    if (snapshotter_) {
      absl::Status st = snapshotter_->Stop();
      EXPECT_TRUE(st.ok()) << st;
    }
    if (HasFailure() && snapshotter_) {
      std::string log = snapshotter_->ReadLog();
      if (log.size() > 20000) log = log.substr(log.size() - 20000);
      std::cerr << "---- snapshotter log (tail) ----\n" << log << "\n";
    }
  }

  // `ctr -n NS ARGS...`, asserting success; returns the output.
  std::string Ctr(const std::string& ns, std::vector<std::string> args) {
    args.insert(args.begin(), {"-n", ns});
    auto out = containerd_->CtrOk(args);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "";
  }

  // After the daemon restarts, containerd's gRPC client redials only after its backoff: poll
  // until `ctr snapshots ls` works again. Returns the seconds it took, or -1 after 60 s.
  double WaitForReconnect(const std::string& ns) {
    auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
      auto r = containerd_->Ctr({"-n", ns, "snapshots", "--snapshotter", "lazypull", "ls"});
      if (r.ok() && r->exit_code == 0) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return -1;
  }

  std::string LazypullSnapshotsDir() const { return snapshotter_->root() + "/snapshots"; }
  std::string OverlayfsSnapshotsDir() const {
    return containerd_->root() + "/io.containerd.snapshotter.v1.overlayfs/snapshots";
  }

  TempDir dir_{"lp-e2e"};
  BuiltImage image_;
  std::string ref_;
  std::unique_ptr<RegistryProcess> registry_;
  std::unique_ptr<SnapshotterProcess> snapshotter_;
  std::unique_ptr<ContainerdProcess> containerd_;
};

TEST_F(SnapshotterE2eTest, PullAndRunWritesToUpperDir) {
  Ctr("e2e-run", {"images", "pull", "--plain-http", "--snapshotter", "lazypull", ref_});
  // One committed snapshot per layer, each in its own directory under the lazypull root.
  EXPECT_EQ(CountSnapshotDirs(LazypullSnapshotsDir()), 3);
  auto ls = Ctr("e2e-run", {"snapshots", "--snapshotter", "lazypull", "ls"});
  EXPECT_EQ(std::count(ls.begin(), ls.end(), '\n'), 4) << ls;  // header + 3 layers

  std::string out =
      Ctr("e2e-run", {"run", "--snapshotter", "lazypull", ref_, "c1", "/bin/sh", "-c", kRunScript});
  EXPECT_EQ(out, kRunOutput);

  // The container's rootfs is the active snapshot "c1": overlay over the 3 layers, with the
  // upper dir in the lazypull root.
  std::string mounts =
      Ctr("e2e-run", {"snapshots", "--snapshotter", "lazypull", "mounts", "/mnt", "c1"});
  EXPECT_THAT(mounts, ::testing::StartsWith("mount -t overlay overlay /mnt -o "));
  std::string upper = MountOption(mounts, "upperdir");
  ASSERT_THAT(upper, ::testing::StartsWith(LazypullSnapshotsDir() + "/")) << mounts;
  EXPECT_THAT(upper, ::testing::EndsWith("/fs"));
  std::string lower = MountOption(mounts, "lowerdir");
  EXPECT_EQ(std::count(lower.begin(), lower.end(), ':'), 2) << mounts;
  auto written = ReadFile(upper + "/written.txt");
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, "written by the container");
  // Nothing from the image was copied up: only what the container wrote.
  EXPECT_FALSE(ReadFile(upper + "/data/hello.txt").ok());

  Ctr("e2e-run", {"containers", "rm", "c1"});
  Ctr("e2e-run", {"images", "rm", ref_});
}

// Pulls and runs the same image with lazypull and with overlayfs (separate namespaces of the same
// containerd) and requires identical `ctr snapshots` ls/tree/info/usage/mounts/rm results.
TEST_F(SnapshotterE2eTest, CtrSnapshotsBehaveLikeOverlayfs) {
  struct Side {
    std::string snapshotter, ns, snapshots_dir;
  };
  const Side sides[2] = {{"lazypull", "e2e-lp", LazypullSnapshotsDir()},
                         {"overlayfs", "e2e-ov", OverlayfsSnapshotsDir()}};
  auto snap = [&](const Side& s, std::vector<std::string> args) {
    args.insert(args.begin(), {"snapshots", "--snapshotter", s.snapshotter});
    return Ctr(s.ns, args);
  };
  for (const Side& s : sides) {
    Ctr(s.ns, {"images", "pull", "--plain-http", "--snapshotter", s.snapshotter, ref_});
    EXPECT_EQ(
        Ctr(s.ns, {"run", "--snapshotter", s.snapshotter, ref_, "c1", "/bin/sh", "-c", kRunScript}),
        kRunOutput);
  }
  const Side& lp = sides[0];
  const Side& ov = sides[1];

  std::string ls = snap(lp, {"ls"});
  EXPECT_EQ(ls, snap(ov, {"ls"}));
  EXPECT_EQ(snap(lp, {"tree"}), snap(ov, {"tree"}));
  EXPECT_EQ(snap(lp, {"usage"}), snap(ov, {"usage"}));

  // Committed chain IDs from `ls` (KEY PARENT KIND), ordered top layer first, then the
  // container's active snapshot "c1".
  std::map<std::string, std::string> parent_of;
  for (absl::string_view line : absl::StrSplit(ls, '\n', absl::SkipWhitespace())) {
    std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (cols.empty() || cols[0] == "KEY" || cols[0] == "c1") continue;
    parent_of[cols[0]] = cols.size() == 3 ? cols[1] : "";
  }
  ASSERT_EQ(parent_of.size(), 3u) << ls;
  std::vector<std::string> chain;  // top first
  while (chain.size() < 3) {
    std::string key;
    // Find the snapshot that is nobody's parent (top), then walk parents down.
    if (chain.empty()) {
      for (const auto& [k, p] : parent_of) {
        bool is_parent = false;
        for (const auto& [k2, p2] : parent_of) is_parent |= (p2 == k);
        if (!is_parent) key = k;
      }
    } else {
      key = parent_of[chain.back()];
    }
    ASSERT_TRUE(parent_of.count(key)) << ls;
    chain.push_back(key);
  }
  EXPECT_EQ(parent_of[chain[2]], "");

  std::vector<std::string> keys = chain;
  keys.push_back("c1");
  for (const std::string& key : keys) {
    SCOPED_TRACE(key);
    EXPECT_EQ(StripTimestamps(snap(lp, {"info", key})), StripTimestamps(snap(ov, {"info", key})));
    EXPECT_EQ(snap(lp, {"usage", key}), snap(ov, {"usage", key}));
  }
  // Only active snapshots have mounts; the container's must be the same overlay modulo paths.
  std::string lp_mounts = snap(lp, {"mounts", "/mnt", "c1"});
  EXPECT_EQ(NormalizeSnapshotPaths(lp_mounts, lp.snapshots_dir),
            NormalizeSnapshotPaths(snap(ov, {"mounts", "/mnt", "c1"}), ov.snapshots_dir))
      << lp_mounts;

  // A snapshot with children cannot be removed: same failure on both.
  auto lp_rm =
      containerd_->Ctr({"-n", lp.ns, "snapshots", "--snapshotter", lp.snapshotter, "rm", chain[2]});
  auto ov_rm =
      containerd_->Ctr({"-n", ov.ns, "snapshots", "--snapshotter", ov.snapshotter, "rm", chain[2]});
  ASSERT_TRUE(lp_rm.ok() && ov_rm.ok());
  EXPECT_NE(lp_rm->exit_code, 0);
  EXPECT_EQ(lp_rm->exit_code, ov_rm->exit_code);
  EXPECT_EQ(lp_rm->output, ov_rm->output);

  // prepare/view/rm of snapshots made by hand, then the container's: each removal reaches the
  // backend (containerd's GC removes the snapshot there and calls Cleanup).
  for (const Side& s : sides) {
    snap(s, {"prepare", "by-hand", chain[0]});
    snap(s, {"view", "by-hand-view", chain[1]});
    // Without a gc.root label containerd's GC would collect them at the next deletion. The
    // containerd.io/snapshot/ label is passed on to the backend (Update).
    for (const char* key : {"by-hand", "by-hand-view"}) {
      snap(s, {"label", key, "containerd.io/gc.root=e2e", "containerd.io/snapshot/e2e=yes"});
    }
  }
  EXPECT_EQ(snap(lp, {"ls"}), snap(ov, {"ls"}));
  for (const char* key : {"by-hand", "by-hand-view"}) {
    SCOPED_TRACE(key);
    EXPECT_EQ(StripTimestamps(snap(lp, {"info", key})), StripTimestamps(snap(ov, {"info", key})));
    EXPECT_EQ(NormalizeSnapshotPaths(snap(lp, {"mounts", "/mnt", key}), lp.snapshots_dir),
              NormalizeSnapshotPaths(snap(ov, {"mounts", "/mnt", key}), ov.snapshots_dir));
    EXPECT_EQ(snap(lp, {"usage", key}), snap(ov, {"usage", key}));
  }
  EXPECT_EQ(CountSnapshotDirs(lp.snapshots_dir), 6);
  for (const Side& s : sides) {
    snap(s, {"rm", "by-hand"});
    snap(s, {"rm", "by-hand-view"});
    Ctr(s.ns, {"containers", "rm", "c1"});  // also removes the snapshot "c1"
  }
  EXPECT_EQ(snap(lp, {"ls"}), snap(ov, {"ls"}));
  EXPECT_EQ(WaitForSnapshotDirs(ov.snapshots_dir, 3), 3);
  EXPECT_EQ(WaitForSnapshotDirs(lp.snapshots_dir, 3), 3);

  // Removing the top layer's snapshot leaves the lower ones unreferenced: containerd's GC
  // removes all of them from both backends.
  // One side at a time: containerd's GC scheduler can miss a deletion made while it runs.
  snap(ov, {"rm", chain[0]});
  EXPECT_EQ(WaitForSnapshotDirs(ov.snapshots_dir, 0), 0);
  snap(lp, {"rm", chain[0]});
  EXPECT_EQ(WaitForSnapshotDirs(lp.snapshots_dir, 0), 0);
  std::string empty_ls = snap(ov, {"ls"});
  EXPECT_EQ(std::count(empty_ls.begin(), empty_ls.end(), '\n'), 1) << empty_ls;  // header only
  EXPECT_EQ(snap(lp, {"ls"}), empty_ls);
  for (const Side& s : sides) Ctr(s.ns, {"images", "rm", ref_});
}

// containerd keeps running while the daemon restarts (clean stop, then kill -9): pulled
// snapshots survive, calls fail as unavailable while it is down, and containerd reconnects.
TEST_F(SnapshotterE2eTest, SurvivesDaemonRestartUnderContainerd) {
  const std::string ns = "e2e-restart";
  Ctr(ns, {"images", "pull", "--plain-http", "--snapshotter", "lazypull", ref_});
  std::string ls_before = Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "ls"});

  // SIGTERM: clean exit (status 0) and the socket is removed.
  absl::Status stopped = snapshotter_->Stop();
  ASSERT_TRUE(stopped.ok()) << stopped;
  EXPECT_NE(access(snapshotter_->socket().c_str(), F_OK), 0) << "socket left after SIGTERM";
  auto down = containerd_->Ctr({"-n", ns, "snapshots", "--snapshotter", "lazypull", "ls"});
  ASSERT_TRUE(down.ok());
  EXPECT_NE(down->exit_code, 0);
  EXPECT_THAT(down->output, ::testing::HasSubstr("unavailable"));

  ASSERT_TRUE(snapshotter_->Restart().ok());
  ASSERT_GE(WaitForReconnect(ns), 0) << "containerd never reconnected to the restarted daemon";
  EXPECT_EQ(Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "ls"}), ls_before);
  EXPECT_EQ(Ctr(ns, {"run", "--rm", "--snapshotter", "lazypull", ref_, "c1", "/bin/sh", "-c",
                     "cat /data/hello.txt"}),
            "hello from layer 2\n");

  // kill -9 with a container's snapshot active, then restart on the same root.
  EXPECT_EQ(Ctr(ns, {"run", "--snapshotter", "lazypull", ref_, "c2", "/bin/sh", "-c", kRunScript}),
            kRunOutput);
  std::string mounts_before =
      Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "mounts", "/mnt", "c2"});
  snapshotter_->Kill();
  absl::Status restarted = snapshotter_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_GE(WaitForReconnect(ns), 0) << "containerd never reconnected to the restarted daemon";
  EXPECT_EQ(Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "mounts", "/mnt", "c2"}),
            mounts_before);
  auto written = ReadFile(MountOption(mounts_before, "upperdir") + "/written.txt");
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, "written by the container");
  Ctr(ns, {"containers", "rm", "c2"});
  EXPECT_EQ(Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "ls"}), ls_before);
  EXPECT_EQ(WaitForSnapshotDirs(LazypullSnapshotsDir(), 3), 3);
}

// A CRI-style pull (what kubelet triggers) passes containerd.io/snapshot.ref and the
// containerd.io/snapshot/cri.* labels to Prepare/Commit; with them lazypull still unpacks
// normally (no remote snapshot yet) and the image runs.
TEST_F(SnapshotterE2eTest, CriStylePullCarriesSnapshotLabels) {
  const std::string ns = "e2e-cri";
  auto pulled = containerd_->CriPull(ns, ref_, "lazypull");
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(*pulled, "unpacked " + ref_ + " " + image_.manifest_digest + "\n");
  EXPECT_EQ(CountSnapshotDirs(LazypullSnapshotsDir()), 3);

  // Each snapshot's labels (`ctr snapshots info` prints its Info as JSON).
  std::string ls = Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "ls"});
  std::set<std::string> layer_digests, image_refs;
  for (absl::string_view line : absl::StrSplit(ls, '\n', absl::SkipWhitespace())) {
    std::string key(line.substr(0, line.find(' ')));
    if (key == "KEY") continue;
    std::string text = Ctr(ns, {"snapshots", "--snapshotter", "lazypull", "info", key});
    nlohmann::json info = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(info.is_object()) << text;
    const nlohmann::json labels = info.value("Labels", nlohmann::json::object());
    layer_digests.insert(labels.value("containerd.io/snapshot/cri.layer-digest", ""));
    image_refs.insert(labels.value("containerd.io/snapshot/cri.image-ref", ""));
  }
  EXPECT_EQ(layer_digests,
            std::set<std::string>(image_.layer_digests.begin(), image_.layer_digests.end()));
  EXPECT_EQ(image_refs, std::set<std::string>{ref_});
  EXPECT_EQ(Ctr(ns, {"run", "--rm", "--snapshotter", "lazypull", ref_, "c1", "/bin/sh", "-c",
                     "cat /data/hello.txt"}),
            "hello from layer 2\n");
}

}  // namespace
}  // namespace lazypull::testing
