// `lazypull rpull` end to end (issue 9): real containerd + runc + docker-registry + the
// snapshotter with its default configuration. For eStargz and zstd:chunked (lazypull convert,
// skopeo) every layer is mounted lazily and only the TOC (and no file content) was fetched by
// the time rpull returns; so for the plain gzip image with a SOCI index (`lazypull index
// create`, issue 19), whose layers rpull names `lazy (soci)`; plain gzip layers without an index
// fall back and are unpacked by containerd. In every
// case `ctr run` works and the container's whole tree equals the source rootfs. Removing the
// image lets containerd's GC remove lazypull's snapshots. Bad input ends with one clear line on
// stderr, exit status 1, and no image record. Also: the nerdctl configuration (proxy plugin
// named `lazypull-stargz`) with `ctr-remote images rpull`.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"

namespace lazypull::testing {
namespace {

// What the hand-made 4th layer of the test image leaves in /old (an opaque directory).
constexpr char kOpaqueScript[] = "cat /old/after-opaque.txt; ls /old";
constexpr char kOpaqueOutput[] = "only file after the opaque dir\nafter-opaque.txt\n";
// Mount points runc creates or mounts over inside the container; not part of the image.
const std::vector<std::string> kRuntimeDirs = {"proc", "sys", "dev", "run"};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

class RpullTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    images_ = new RemoteTestImages();
    images_->status = BuildRemoteTestImages(*images_);
    if (!images_->status.ok()) return;
    // soci:v1 = the plain gzip image src:v1, untouched, with a SOCI index (v2) made by
    // `lazypull index create` (every layer indexed, small spans).
    auto indexed =
        RunCommand({BinaryDir() + "/bin/lazypull", "index", "create", "--plain-http", "--span-size",
                    "64KiB", "--min-layer-size", "0", images_->registry->host() + "/src:v1",
                    images_->registry->host() + "/soci:v1"},
                   std::chrono::seconds(300));
    if (!indexed.ok() || indexed->exit_code != 0) {
      images_->status =
          indexed.ok() ? absl::InternalError("index create: " + indexed->output) : indexed.status();
      return;
    }
    // The daemon's defaults, except status.json is rewritten often (reporting only) and no
    // metrics port (the harness's default).
    SnapshotterOptions sopts;
    sopts.config_toml = "[remote]\nstatus_interval_ms = 200\n";
    mkdir(images_->dir.Sub("lp").c_str(), 0755);
    auto snapshotter = SnapshotterProcess::Start(images_->dir.Sub("lp"), sopts);
    if (!snapshotter.ok()) {
      images_->status = snapshotter.status();
      return;
    }
    snapshotter_ = snapshotter->release();
    ContainerdOptions options;
    options.proxy_snapshotter_socket = snapshotter_->socket();
    mkdir(images_->dir.Sub("cd").c_str(), 0755);
    auto containerd = ContainerdProcess::Start(images_->dir.Sub("cd"), options);
    if (!containerd.ok()) {
      images_->status = containerd.status();
      return;
    }
    containerd_ = containerd->release();
  }
  static void TearDownTestSuite() {
    if (containerd_ != nullptr) {
      EXPECT_EQ(containerd_->Stop(), absl::OkStatus());
    }
    delete containerd_;
    containerd_ = nullptr;
    if (snapshotter_ != nullptr) {
      EXPECT_EQ(snapshotter_->Stop(), absl::OkStatus());
    }
    delete snapshotter_;
    snapshotter_ = nullptr;
    delete images_;
    images_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(images_->status.ok()) << images_->status; }
  void TearDown() override {
    if (HasFailure() && snapshotter_ != nullptr) {
      std::cerr << "--- snapshotter log (tail) ---\n"
                << Tail(snapshotter_->ReadLog(), 6000) << "\n--- containerd log (tail) ---\n"
                << Tail(containerd_->ReadLog(), 4000);
    }
  }
  static std::string Tail(const std::string& s, size_t n) {
    return s.size() <= n ? s : s.substr(s.size() - n);
  }

  std::string Ref(const std::string& repo_tag) const {
    return images_->registry->host() + "/" + repo_tag;
  }

  // `lazypull rpull -a <containerd> -n NS --plain-http ARGS... REF`.
  static absl::StatusOr<CommandResult> Rpull(const std::string& ns, const std::string& ref,
                                             const std::vector<std::string>& extra = {},
                                             const std::string& address = "") {
    std::vector<std::string> argv = {BinaryDir() + "/bin/lazypull",
                                     "rpull",
                                     "--address",
                                     address.empty() ? containerd_->address() : address,
                                     "--namespace",
                                     ns,
                                     "--plain-http"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(ref);
    return RunCommand(argv, std::chrono::seconds(300));
  }

  // The parsed status.json of the daemon.
  static nlohmann::json Status() {
    auto text = ReadFile(snapshotter_->root() + "/status.json");
    if (!text.ok()) return nlohmann::json::object();
    return nlohmann::json::parse(*text, nullptr, false);
  }
  // The `layers` entry of status.json whose `digest` is `digest` (null if none).
  static nlohmann::json StatusLayer(const nlohmann::json& status, const Digest& digest) {
    if (!status.is_object() || !status.contains("layers")) return nullptr;
    for (const auto& l : status["layers"]) {
      if (l.value("digest", "") == digest.ToString()) return l;
    }
    return nullptr;
  }

  // The image names in namespace `ns` (`ctr images ls -q`).
  static std::vector<std::string> ImageNames(const std::string& ns) {
    auto out = containerd_->CtrOk({"-n", ns, "images", "ls", "-q"});
    return out.ok() ? Lines(*out) : std::vector<std::string>{"<ctr failed>"};
  }

  // `ctr images rm --sync`: the image goes and containerd's GC runs at once. Tests end with it
  // so the daemon holds no snapshot of theirs: the daemon (like containerd's remote-snapshot
  // protocol) reuses a committed layer for the same chain ID across namespaces, which would
  // otherwise let one test's layers stand in for the next one's.
  static void RemoveImage(ContainerdProcess& cd, const std::string& ns, const std::string& ref) {
    auto rm = cd.CtrOk({"-n", ns, "images", "rm", "--sync", ref});
    EXPECT_TRUE(rm.ok()) << rm.status();
  }

  // Starts a container that sleeps, compares its root filesystem (as containerd mounted it)
  // with the image's unpacked rootfs, runs kOpaqueScript in it, and removes it.
  // `known_diffs`: differences that are containerd's, not lazypull's (exact lines).
  void ExpectContainerTreeEqualsSource(const std::string& ns, const std::string& ref,
                                       const std::vector<std::string>& known_diffs = {}) {
    const std::string id = ns + "-tree";
    auto started = containerd_->CtrOk(
        {"-n", ns, "run", "-d", "--snapshotter", "lazypull", ref, id, "/bin/sleep", "600"});
    ASSERT_TRUE(started.ok()) << started.status();
    const std::string rootfs = absl::StrCat(containerd_->state(), "/io.containerd.runtime.v2.task/",
                                            ns, "/", id, "/rootfs");
    std::vector<std::string> diffs = CompareTrees(images_->rootfs, rootfs, kRuntimeDirs);
    EXPECT_EQ(diffs, known_diffs) << ref << ": the container's tree differs from the source:\n"
                                  << absl::StrJoin(
                                         diffs.begin(),
                                         diffs.begin() + std::min<size_t>(diffs.size(), 40), "\n");
    EXPECT_TRUE(containerd_->CtrOk({"-n", ns, "tasks", "kill", "-s", "SIGKILL", id}).ok());
    bool stopped = WaitUntil(
        [&] {
          auto ls = containerd_->Ctr({"-n", ns, "tasks", "ls"});
          return ls.ok() && !absl::StrContains(ls->output, "RUNNING");
        },
        std::chrono::seconds(30));
    EXPECT_TRUE(stopped);
    EXPECT_TRUE(containerd_->CtrOk({"-n", ns, "tasks", "rm", id}).ok());
    EXPECT_TRUE(containerd_->CtrOk({"-n", ns, "containers", "rm", id}).ok());
    // A program runs in it and reads the top layer's opaque directory.
    auto out = containerd_->CtrOk({"-n", ns, "run", "--rm", "--snapshotter", "lazypull", ref,
                                   ns + "-run", "/bin/sh", "-c", kOpaqueScript});
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, kOpaqueOutput);
  }

  static RemoteTestImages* images_;
  static SnapshotterProcess* snapshotter_;
  static ContainerdProcess* containerd_;
};

RemoteTestImages* RpullTest::images_ = nullptr;
SnapshotterProcess* RpullTest::snapshotter_ = nullptr;
ContainerdProcess* RpullTest::containerd_ = nullptr;

// rpull of a lazy format: every layer lazy (in rpull's output and in status.json), no file
// content fetched in the foreground, the container's tree exact, the image listed by ctr.
class RpullLazyTest : public RpullTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(RpullLazyTest, EveryLayerLazyAndTheContainerSeesTheSourceTree) {
  std::string ns = "lazy-" + GetParam().substr(0, GetParam().find(':'));
  const std::string ref = Ref(GetParam());
  auto pushed = ResolvePushed(ref);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  const auto& layers = pushed->resolved.manifest.layers;

  auto pulled = Rpull(ns, ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
  std::vector<std::string> lines = Lines(pulled->output);
  ASSERT_EQ(lines.size(), layers.size() + 2) << pulled->output;
  EXPECT_EQ(lines.front(), absl::StrCat(ref, ": resolved manifest ",
                                        pushed->resolved.manifest_descriptor.digest.ToString(),
                                        " (", layers.size(), " layers)"));
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_TRUE(absl::StartsWith(
        lines[i + 1], absl::StrCat("layer ", i + 1, "/", layers.size(),
                                   " sha256:", layers[i].digest.hex().substr(0, 12), " lazy (")))
        << lines[i + 1];
    if (GetParam() == "soci:v1") {
      EXPECT_TRUE(absl::StrContains(lines[i + 1], " lazy (soci) "));
    }
  }
  EXPECT_TRUE(absl::StartsWith(lines.back(), ref + ": pulled in ")) << lines.back();
  EXPECT_TRUE(
      absl::StrContains(lines.back(), absl::StrCat(layers.size(), " lazy, 0 downloaded (0 B)")))
      << lines.back();

  // Every layer is a mounted remote layer and no read of a container fetched anything yet
  // (demand_fetches 0). With background fetch on (the default) the pull itself walks the
  // program the image config names (issue 18: /bin/sh, i.e. busybox in layer 1), so layer 1
  // may hold those bytes; every other layer fetched at most TOC-sized (the 1 MiB and 3 MiB
  // random files of layer 2 were not read). Background fetch may start on its own schedule,
  // so it is subtracted.
  nlohmann::json status;
  ASSERT_TRUE(WaitUntil(
      [&] {
        status = Status();
        for (const auto& l : layers) {
          if (StatusLayer(status, l.digest).is_null()) return false;
        }
        return true;
      },
      std::chrono::seconds(10)))
      << pulled->output << status.dump(1);
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    nlohmann::json s = StatusLayer(status, l.digest);
    EXPECT_EQ(s.value("demand_fetches", uint64_t{1}), 0u) << s.dump();
    EXPECT_EQ(s.value("ref", ""),
              absl::StrCat(pushed->resolved.reference.Name(), "@",
                           pushed->resolved.manifest_descriptor.digest.ToString()))
        << s.dump();
    const uint64_t foreground =
        s.value("bytes_fetched", uint64_t{0}) - s.value("background_bytes", uint64_t{0});
    if (i != 0) {
      EXPECT_LT(foreground, 64u << 10) << "layer " << l.digest.ToString() << ": " << s.dump();
    }
    if (GetParam() == "soci:v1") {
      EXPECT_EQ(s.value("format", ""), "soci") << s.dump();
    }
  }
  EXPECT_EQ(ImageNames(ns), std::vector<std::string>{ref});
  ExpectContainerTreeEqualsSource(ns, ref);
  RemoveImage(*containerd_, ns, ref);
}

INSTANTIATE_TEST_SUITE_P(Formats, RpullLazyTest,
                         ::testing::Values("esgz:v1", "zc:v1", "skopeo-zc:v1", "soci:v1"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

TEST_F(RpullTest, PlainGzipFallsBackAndIsUnpackedByContainerd) {
  const std::string ns = "gzip";
  const std::string ref = Ref("src:v1");
  auto pushed = ResolvePushed(ref);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  const auto& layers = pushed->resolved.manifest.layers;
  auto pulled = Rpull(ns, ref);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
  std::vector<std::string> lines = Lines(pulled->output);
  ASSERT_EQ(lines.size(), layers.size() + 2) << pulled->output;
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_TRUE(absl::StartsWith(
        lines[i + 1], absl::StrCat("layer ", i + 1, "/", layers.size(), " sha256:",
                                   layers[i].digest.hex().substr(0, 12), " downloaded ")))
        << lines[i + 1];
  }
  EXPECT_TRUE(
      absl::StrContains(lines.back(), absl::StrCat("0 lazy, ", layers.size(), " downloaded")))
      << lines.back();
  // No layer became a remote layer.
  nlohmann::json status = Status();
  for (const auto& l : layers)
    EXPECT_TRUE(StatusLayer(status, l.digest).is_null()) << l.digest.ToString();
  // The blobs are in containerd's content store, labelled with their DiffIDs.
  auto content = containerd_->CtrOk({"-n", ns, "content", "ls"});
  ASSERT_TRUE(content.ok());
  for (const auto& l : layers) {
    EXPECT_TRUE(absl::StrContains(*content, l.digest.ToString())) << *content;
  }
  EXPECT_EQ(ImageNames(ns), std::vector<std::string>{ref});
  // containerd's own unpacker keeps an xattr whose PAX value is empty; umoci (the expected
  // tree) and lazypull's lazy mounts drop it (POSIX: an empty value deletes the keyword).
  ExpectContainerTreeEqualsSource(
      ns, ref,
      {"/xattrs/file: xattrs differ: want {user.color=\"blue\"} got {user.color=\"blue\" "
       "user.empty=\"\"}"});
  RemoveImage(*containerd_, ns, ref);
}

// Pulling again is a no-op for the layers (already unpacked) and keeps one image record.
TEST_F(RpullTest, PullingTwiceReusesTheSnapshots) {
  const std::string ns = "twice";
  const std::string ref = Ref("esgz:v1");
  auto first = Rpull(ns, ref);
  ASSERT_TRUE(first.ok() && first->exit_code == 0) << (first.ok() ? first->output : "");
  auto second = Rpull(ns, ref);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->exit_code, 0) << second->output;
  EXPECT_TRUE(absl::StrContains(second->output, "0 lazy, 0 downloaded (0 B), 4 already unpacked"))
      << second->output;
  EXPECT_EQ(ImageNames(ns), std::vector<std::string>{ref});
  RemoveImage(*containerd_, ns, ref);
}

// Removing the image and letting containerd's GC run removes lazypull's snapshots (through the
// proxy's Remove) and the daemon stops serving those layers.
TEST_F(RpullTest, ImageRemovalAndGcReleaseTheSnapshots) {
  const std::string ns = "gc";
  const std::string ref = Ref("zc:v1");
  auto pulled = Rpull(ns, ref);
  ASSERT_TRUE(pulled.ok() && pulled->exit_code == 0) << (pulled.ok() ? pulled->output : "");
  auto snaps = containerd_->CtrOk({"-n", ns, "snapshots", "--snapshotter", "lazypull", "ls"});
  ASSERT_TRUE(snaps.ok());
  EXPECT_EQ(Lines(*snaps).size(), 1u + 4u) << *snaps;  // header + one per layer
  auto pushed = ResolvePushed(ref);
  ASSERT_TRUE(pushed.ok());
  ASSERT_TRUE(WaitUntil(
      [&] { return !StatusLayer(Status(), pushed->resolved.manifest.layers[0].digest).is_null(); },
      std::chrono::seconds(10)));
  const size_t mounted_before = Status()["layers"].size();

  ASSERT_TRUE(containerd_->CtrOk({"-n", ns, "images", "rm", "--sync", ref}).ok());
  EXPECT_TRUE(ImageNames(ns).empty());
  snaps = containerd_->CtrOk({"-n", ns, "snapshots", "--snapshotter", "lazypull", "ls"});
  ASSERT_TRUE(snaps.ok());
  EXPECT_EQ(Lines(*snaps).size(), 1u) << *snaps;  // only the header
  nlohmann::json status;
  EXPECT_TRUE(WaitUntil(
      [&] {
        status = Status();
        for (const auto& l : pushed->resolved.manifest.layers) {
          nlohmann::json s = StatusLayer(status, l.digest);
          // Another namespace may serve the same digest; this one's snapshots must be gone.
          if (!s.is_null() && status["layers"].size() + 4 > mounted_before) return false;
        }
        return status.is_object() && status["layers"].size() + 4 == mounted_before;
      },
      std::chrono::seconds(10)))
      << "before: " << mounted_before << " now: " << status.dump(1);
}

// Each failure: exit status 1, exactly one line on stderr that names the reference and the
// cause, and no image record.
struct BadCase {
  std::string ns;
  std::vector<std::string> extra;
  std::string expect_in_error;
};

void ExpectCleanFailure(const absl::StatusOr<CommandResult>& r, const std::string& ref,
                        const std::string& expect) {
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1) << r->output;
  std::vector<std::string> lines = Lines(r->output);
  ASSERT_EQ(lines.size(), 1u) << r->output;
  EXPECT_TRUE(absl::StartsWith(lines[0], "lazypull rpull: " + ref + ": ")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], expect)) << lines[0];
}

TEST_F(RpullTest, UnknownImageMissingTagRegistryDownContainerdDown) {
  const std::string unknown = Ref("no-such-repo:v1");
  ExpectCleanFailure(Rpull("bad1", unknown), unknown, "(NOT_FOUND)");
  EXPECT_TRUE(ImageNames("bad1").empty());

  const std::string missing_tag = Ref("esgz:no-such-tag");
  ExpectCleanFailure(Rpull("bad2", missing_tag), missing_tag, "(NOT_FOUND)");
  EXPECT_TRUE(ImageNames("bad2").empty());

  const std::string down = absl::StrCat("127.0.0.1:", PickFreePort(), "/esgz:v1");
  ExpectCleanFailure(Rpull("bad3", down), down, "(UNAVAILABLE)");
  EXPECT_TRUE(ImageNames("bad3").empty());

  const std::string ref = Ref("esgz:v1");
  ExpectCleanFailure(Rpull("bad4", ref, {}, images_->dir.Sub("no-containerd.sock")), ref,
                     "containerd is not reachable at " + images_->dir.Sub("no-containerd.sock"));
}

// A registry with Basic auth serving the same images: no or wrong credentials fail cleanly;
// `--user` pulls (the daemon has no credentials, so its layers fall back and rpull downloads
// them with its own).
TEST_F(RpullTest, AuthFailureAndUserCredentials) {
  RegistryOptions opts;
  opts.basic_user = {"alice", "s3cret"};
  opts.storage_dir = images_->registry->storage_dir();
  opts.read_only = true;
  auto priv = RegistryProcess::Start(images_->dir.Sub("priv"), opts);
  ASSERT_TRUE(priv.ok()) << priv.status();
  const std::string ref = (*priv)->host() + "/esgz:v1";
  ExpectCleanFailure(Rpull("auth1", ref), ref, "(UNAUTHENTICATED)");
  EXPECT_TRUE(ImageNames("auth1").empty());
  ExpectCleanFailure(Rpull("auth2", ref, {"--user", "alice:wrong"}), ref, "(UNAUTHENTICATED)");
  EXPECT_TRUE(ImageNames("auth2").empty());

  auto ok = Rpull("auth3", ref, {"--user", "alice:s3cret"});
  ASSERT_TRUE(ok.ok());
  ASSERT_EQ(ok->exit_code, 0) << ok->output;
  EXPECT_EQ(ImageNames("auth3"), std::vector<std::string>{ref});
  auto out = containerd_->CtrOk({"-n", "auth3", "run", "--rm", "--snapshotter", "lazypull", ref,
                                 "auth3-c", "/bin/sh", "-c", kOpaqueScript});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, kOpaqueOutput);
  RemoveImage(*containerd_, "auth3", ref);
}

// nerdctl sends remote-snapshot labels only to a snapshotter whose name contains "stargz"; the
// README tells nerdctl users to register lazypull as `lazypull-stargz`. This is that
// configuration, driven by `ctr-remote images rpull` (nerdctl's label handler) + `ctr run`.
TEST_F(RpullTest, NerdctlConfigurationProxyNamedLazypullStargz) {
  ContainerdOptions options;
  options.proxy_snapshotter_socket = snapshotter_->socket();
  options.proxy_snapshotter_name = "lazypull-stargz";
  ASSERT_EQ(mkdir(images_->dir.Sub("cd-stargz").c_str(), 0755), 0);
  auto cd = ContainerdProcess::Start(images_->dir.Sub("cd-stargz"), options);
  ASSERT_TRUE(cd.ok()) << cd.status();
  const std::string ref = Ref("esgz:v1");
  auto pushed = ResolvePushed(ref);
  ASSERT_TRUE(pushed.ok());
  auto pulled = RunCommand({"ctr-remote", "--address", (*cd)->address(), "-n", "nerd", "images",
                            "rpull", "--snapshotter", "lazypull-stargz", "--plain-http", ref},
                           std::chrono::seconds(180));
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
  auto out = (*cd)->CtrOk({"-n", "nerd", "run", "--rm", "--snapshotter", "lazypull-stargz", ref,
                           "nerd-c", "/bin/sh", "-c", kOpaqueScript});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, kOpaqueOutput);
  nlohmann::json status = Status();
  for (const auto& l : pushed->resolved.manifest.layers) {
    EXPECT_FALSE(StatusLayer(status, l.digest).is_null()) << l.digest.ToString() << " not lazy:\n"
                                                          << status.dump(1);
  }
  RemoveImage(**cd, "nerd", ref);
  EXPECT_EQ((*cd)->Stop(), absl::OkStatus());
}

}  // namespace
}  // namespace lazypull::testing
