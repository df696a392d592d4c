// The Kubernetes path with a private registry, end to end on real parts: a docker-registry that
// requires Basic auth (htpasswd), containerd 1.6 with its CRI plugin (`snapshotter = "lazypull"`,
// `disable_snapshot_annotations = false`), runc, and the real lazypull-snapshotter with
// `[cri_keychain] enable_keychain = true` pointing at containerd's socket. A CRI client plays
// kubelet with `--image-service-endpoint` = lazypull's socket: PullImage with an AuthConfig is
// lazy for eStargz and for skopeo's zstd:chunked (every layer mounted remotely, bytes fetched
// far below the layer sizes), and so is the plain gzip image indexed by `lazypull index create`
// (SOCI v2, issue 19: only zTOCs fetched by PullImage, every layer served as `soci`, the running
// container's tree equal to the image's unpacked rootfs); the pod's container runs and prints
// what the image holds, wrong credentials give exactly containerd's own gRPC error, other
// ImageService calls answer as containerd does, and the password never reaches lazypull's log
// or disk. Without the AuthConfig reaching lazypull (a pull sent to containerd directly),
// layers fall back.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fetcher/format/soci/soci_index_finder.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/registry_client.h"
#include "nlohmann/json.hpp"
#include "tests/cri/cri_client.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"

namespace lazypull::testing {
namespace {

constexpr char kUser[] = "kube-puller";
constexpr char kPassword[] = "Pw-7f3a9-never-logged";

constexpr char kRunScript[] =
    "cat /etc/image-id; cat /data/hello.txt; cat /etc/greeting; "
    "md5sum /data/big.bin | cut -c1-32; test -e /old/gone.txt || echo gone-is-gone; ls /old";

// Everything the tests share: built once (images, registries, daemons), torn down at the end.
struct Env {
  TempDir dir{"lpcrie"};
  std::unique_ptr<RegistryProcess> open_registry;     // push side, no auth
  std::unique_ptr<RegistryProcess> private_registry;  // same storage, Basic auth, read-only
  std::unique_ptr<FaultProxy> wire;  // in front of private_registry: records every request
  std::unique_ptr<SnapshotterProcess> lazypull;
  std::unique_ptr<ContainerdProcess> containerd;
  std::unique_ptr<CriClient> via_lazypull;    // kubelet with --image-service-endpoint=lazypull
  std::unique_ptr<CriClient> via_containerd;  // kubelet talking to containerd only
  std::string md5_big;
  std::string soci_rootfs;  // the SOCI image's source (gzip) layout unpacked by umoci
};
Env* env = nullptr;

absl::Status BuildAndPush(const std::string& name, const std::string& format) {
  ImageBuilder builder(env->dir.Sub("img-" + name));
  LayerChanges base = LayerChanges::Busybox();
  // A distinct base layer per image: no chain ID is shared, so containerd asks lazypull for
  // every layer of every image (it never re-prepares a chain it has).
  base.files.push_back({.path = "/etc/image-id", .content = "image " + name + "\n"});
  builder.AddLayer(base);
  LayerChanges data = BigFilesLayer();
  data.files.push_back({.path = "/data/hello.txt", .content = "hello from a lazy layer\n"});
  builder.AddLayer(data);
  builder.AddLayer(DeletionsLayer());
  if (format == "pause") {
    builder.SetCmd({"/bin/sleep", "100000"});
  } else {
    builder.SetCmd({"/bin/sh"});
  }
  absl::StatusOr<BuiltImage> image = builder.Build("v1");
  if (!image.ok()) return image.status();
  const std::string open = env->open_registry->host();
  if (format == "pause")
    return env->open_registry->PushOciLayout(image->layout_dir, "v1", name + ":v1");
  if (format == "soci") {
    // The gzip image as pushed, untouched, plus its SOCI index (v2) in an image index. Every
    // layer indexed (the default minimum size would skip these small ones); 512 KiB spans keep
    // the zTOCs (a 32 KiB window per span) small against the layers, as 4 MiB spans do for
    // real images.
    absl::Status s =
        env->open_registry->PushOciLayout(image->layout_dir, "v1", "src-" + name + ":v1");
    if (!s.ok()) return s;
    auto rootfs = UnpackRootfs(image->layout_dir, "v1", env->dir.Sub("rootfs-" + name));
    if (!rootfs.ok()) return rootfs.status();
    env->soci_rootfs = *rootfs;
    auto indexed = RunCommand(
        {BinaryDir() + "/bin/lazypull", "index", "create", "--plain-http", "--span-size", "512KiB",
         "--min-layer-size", "0", open + "/src-" + name + ":v1", open + "/" + name + ":v1"},
        std::chrono::seconds(300));
    if (!indexed.ok()) return indexed.status();
    if (indexed->exit_code != 0) return absl::InternalError("index create: " + indexed->output);
    return absl::OkStatus();
  }
  if (format == "zstd:chunked") {
    ::mkdir(env->dir.Sub("zc-" + name).c_str(), 0755);
    return PushZstdChunkedWithSkopeo(env->dir.Sub("zc-" + name), image->layout_dir, "v1",
                                     open + "/" + name + ":v1");
  }
  absl::Status s =
      env->open_registry->PushOciLayout(image->layout_dir, "v1", "src-" + name + ":v1");
  if (!s.ok()) return s;
  return LazypullConvert("estargz", open + "/src-" + name + ":v1", open + "/" + name + ":v1");
}

// Pulls go through the recording proxy, so every byte of a layer that crossed the wire — to
// containerd or to lazypull — is counted.
std::string PrivateRef(const std::string& name) { return env->wire->host() + "/" + name + ":v1"; }

// Bytes of blob `blob` fetched from the registry by anyone: range lengths, or the whole blob
// for a GET without a Range header.
uint64_t LayerBytesOnTheWire(const oci::Descriptor& blob) {
  uint64_t total = 0;
  for (const RecordedRequest& r : env->wire->Requests()) {
    if (r.method != "GET" || !absl::StrContains(r.target, blob.digest.hex())) continue;
    auto range = r.headers.find("range");
    if (range == r.headers.end()) {
      total += blob.size;
      continue;
    }
    absl::string_view v = range->second;
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

std::string ExpectedOutput(const std::string& name) {
  return absl::StrCat("image ", name, "\nhello from a lazy layer\nhello from the lazy layer\n",
                      env->md5_big, "gone-is-gone\nkept.txt\nnew.txt\n");
}

class CriKeychainE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env = new Env();
    auto open = RegistryProcess::Start(env->dir.Sub("reg-open"));
    ASSERT_TRUE(open.ok()) << open.status();
    env->open_registry = std::move(*open);
    RegistryOptions private_opts;
    private_opts.basic_user = {{kUser, kPassword}};
    private_opts.storage_dir = env->open_registry->storage_dir();
    private_opts.read_only = true;
    auto priv = RegistryProcess::Start(env->dir.Sub("reg-private"), private_opts);
    ASSERT_TRUE(priv.ok()) << priv.status();
    env->private_registry = std::move(*priv);
    auto wire = FaultProxy::Start(env->private_registry->port());
    ASSERT_TRUE(wire.ok()) << wire.status();
    env->wire = std::move(*wire);

    for (const auto& [name, format] :
         std::vector<std::pair<std::string, std::string>>{{"esgz", "estargz"},
                                                          {"zc", "zstd:chunked"},
                                                          {"soci", "soci"},
                                                          {"ctl", "estargz"},
                                                          {"bad", "estargz"},
                                                          {"pause", "pause"}}) {
      absl::Status s = BuildAndPush(name, format);
      ASSERT_TRUE(s.ok()) << name << ": " << s;
    }
    ASSERT_TRUE(WriteFile(env->dir.Sub("big.bin"), RandomBytes(1 << 20, 1)).ok());
    auto md5 =
        RunShell("md5sum " + env->dir.Sub("big.bin") + " | cut -c1-32", std::chrono::seconds(10));
    ASSERT_TRUE(md5.ok());
    env->md5_big = md5->output;

    // lazypull first (containerd connects to its proxy snapshotter lazily, and lazypull to
    // containerd's CRI on the first ImageService call).
    ASSERT_EQ(::mkdir(env->dir.Sub("lp").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(env->dir.Sub("cd").c_str(), 0755), 0);
    const std::string containerd_socket = env->dir.Sub("cd") + "/containerd.sock";
    SnapshotterOptions sopts;
    sopts.config_toml = absl::StrCat(
        "[cri_keychain]\nenable_keychain = true\nimage_service_path = \"", containerd_socket,
        "\"\n[remote]\nstatus_interval_ms = 100\n"
        // Only what is read is fetched, so laziness is measurable.
        "[mount]\nbackground_fetch = false\n");
    auto lp = SnapshotterProcess::Start(env->dir.Sub("lp"), sopts);
    ASSERT_TRUE(lp.ok()) << lp.status();
    env->lazypull = std::move(*lp);

    ContainerdOptions copts;
    copts.proxy_snapshotter_socket = env->lazypull->socket();
    copts.enable_cri = true;
    copts.cri_plugin_config =
        absl::StrCat("  sandbox_image = \"", env->open_registry->host(), "/pause:v1\"");
    auto cd = ContainerdProcess::Start(env->dir.Sub("cd"), copts);
    ASSERT_TRUE(cd.ok()) << cd.status();
    env->containerd = std::move(*cd);
    ASSERT_EQ(env->containerd->address(), containerd_socket);
    env->via_lazypull = std::make_unique<CriClient>(env->lazypull->socket(), containerd_socket);
    env->via_containerd = std::make_unique<CriClient>(containerd_socket, containerd_socket);
  }

  static void TearDownTestSuite() {
    if (env == nullptr) return;
    if (env->containerd) {
      EXPECT_EQ(env->containerd->Stop(), absl::OkStatus());
    }
    if (env->lazypull) {
      EXPECT_EQ(env->lazypull->Stop(), absl::OkStatus());
    }
    delete env;
    env = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(env, nullptr);
    ASSERT_NE(env->containerd, nullptr) << "suite set-up failed";
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "--- lazypull log (tail) ---\n"
                << Tail(env->lazypull->ReadLog(), 12000) << "\n--- containerd log (tail) ---\n"
                << Tail(env->containerd->ReadLog(), 8000);
    }
  }

  static std::string Tail(const std::string& s, size_t n) {
    return s.size() <= n ? s : s.substr(s.size() - n);
  }

  // Waits until status.json lists every layer of `ref` (the status writer runs every 100 ms),
  // then returns those entries by layer digest.
  static std::map<std::string, nlohmann::json> LazyLayers(const PushedImage& image) {
    std::map<std::string, nlohmann::json> out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      out.clear();
      auto text = ReadFile(env->lazypull->root() + "/status.json");
      if (text.ok()) {
        nlohmann::json st = nlohmann::json::parse(*text, nullptr, false);
        if (st.is_object() && st.contains("layers")) {
          for (const auto& l : st["layers"]) out[l.value("digest", "")] = l;
        }
      }
      bool all = true;
      for (const oci::Descriptor& layer : image.resolved.manifest.layers) {
        all = all && out.count(layer.digest.ToString()) > 0;
      }
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return out;
  }

  // The zTOC of each layer of the SOCI-enabled image `name` (open registry), by layer digest.
  static std::map<Digest, oci::Descriptor> Ztocs(const std::string& name) {
    std::map<Digest, oci::Descriptor> out;
    auto ref = registry::ParseReference(env->open_registry->host() + "/" + name + ":v1");
    EXPECT_TRUE(ref.ok()) << ref.status();
    if (!ref.ok()) return out;
    registry::RegistryClient client(registry::RegistryConfig{}, registry::NewCurlTransport());
    auto found = soci::FindSociIndex(client, *ref, std::nullopt);
    EXPECT_TRUE(found.ok() && found->has_value()) << name << ": no SOCI index found";
    if (!found.ok() || !found->has_value()) return out;
    for (const soci::ZtocRef& z : (*found)->index.ztocs) {
      // `index create` writes a fine index by default: the daemon fetches it, not the zTOC.
      std::map<std::string, std::string> annotations;
      soci::AddZtocAnnotations(z.ztoc, annotations);
      auto fine = soci::FineFromAnnotations(annotations);
      EXPECT_TRUE(fine.ok() && fine->has_value()) << z.ztoc.digest.ToString() << ": no fine index";
      out.emplace(z.layer_digest, fine.ok() && fine->has_value() ? (*fine)->fine : z.ztoc);
    }
    return out;
  }

  // PullImage through lazypull with the image pull secret, then checks laziness, runs the pod's
  // container through containerd's CRI and checks its output. `format` is the lazy format every
  // layer must be served in (status.json). For "soci" the layer's index is its fine index (next
  // to its zTOC), a blob of its own: PullImage must have fetched it and none of the layer.
  void PullLazilyAndRun(const std::string& name, const std::string& format) {
    const std::string ref = PrivateRef(name);
    std::string image_ref;
    grpc::Status s = env->via_lazypull->PullImage(ref, BasicAuth(kUser, kPassword), &image_ref);
    ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    EXPECT_TRUE(absl::StartsWith(image_ref, "sha256:")) << image_ref;

    auto image = ResolvePushed(env->open_registry->host() + "/" + name + ":v1");
    ASSERT_TRUE(image.ok()) << image.status();
    const std::map<Digest, oci::Descriptor> ztocs =
        format == "soci" ? Ztocs(name) : std::map<Digest, oci::Descriptor>{};
    std::map<std::string, nlohmann::json> layers = LazyLayers(*image);
    uint64_t fetched = 0, total = 0;
    for (const oci::Descriptor& layer : image->resolved.manifest.layers) {
      EXPECT_TRUE(layers.count(layer.digest.ToString()))
          << "layer " << layer.digest.ToString() << " was not mounted lazily";
      EXPECT_EQ(layers[layer.digest.ToString()].value("format", ""), format)
          << layers[layer.digest.ToString()].dump();
      uint64_t bytes = LayerBytesOnTheWire(layer);
      EXPECT_LT(bytes, static_cast<uint64_t>(layer.size) / 4)
          << "layer " << layer.digest.ToString() << " of " << layer.size << " bytes";
      if (format == "soci") {
        EXPECT_EQ(bytes, 0u) << "layer " << layer.digest.ToString() << " read before any run";
        auto ztoc = ztocs.find(layer.digest);
        EXPECT_NE(ztoc, ztocs.end()) << "no zTOC for layer " << layer.digest.ToString();
        if (ztoc != ztocs.end()) {
          EXPECT_EQ(LayerBytesOnTheWire(ztoc->second), static_cast<uint64_t>(ztoc->second.size))
              << "zTOC " << ztoc->second.digest.ToString() << " was not fetched (once, whole)";
          bytes += LayerBytesOnTheWire(ztoc->second);
        }
      }
      std::cout << "[ lazy ] " << name << " layer " << layer.digest.hex().substr(0, 12) << ": "
                << bytes << " of " << layer.size << " bytes fetched by PullImage\n";
      fetched += bytes;
      total += layer.size;
    }
    EXPECT_GT(fetched, 0u) << "no TOC was fetched through the proxy?";
    EXPECT_LT(fetched * 10, total);

    auto run = env->via_lazypull->RunContainer(name + "-pod", ref, {"/bin/sh", "-c", kRunScript},
                                               env->dir.Sub("logs-" + name));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 0);
    EXPECT_EQ(run->output, ExpectedOutput(name));

    // The container read /data/big.bin (1 MiB, incompressible): lazypull fetched about that
    // much of the data layer with the keychain's credentials — and not the 3 MiB other.bin.
    const oci::Descriptor& data = image->resolved.manifest.layers.at(1);
    uint64_t after_run = LayerBytesOnTheWire(data);
    std::cout << "[ lazy ] " << name << " data layer after the run: " << after_run << " of "
              << data.size << " bytes\n";
    EXPECT_GE(after_run, uint64_t{1} << 20);
    EXPECT_LT(after_run, static_cast<uint64_t>(data.size) / 2);
  }
};

TEST_F(CriKeychainE2eTest, PrivateEstargzPullsLazilyWithPullImageCredentialsAndRuns) {
  PullLazilyAndRun("esgz", "estargz");
}

TEST_F(CriKeychainE2eTest, PrivateSkopeoZstdChunkedPullsLazilyWithPullImageCredentialsAndRuns) {
  PullLazilyAndRun("zc", "zstd:chunked");
}

// The plain gzip image, untouched, with a SOCI index made by `lazypull index create`: CRI's labels
// (image ref, manifest digest) lead the daemon to the index through the private registry with
// the pull secret's credentials; every layer is served from its zTOC, the pod runs, and the
// running container's tree is the image's own (contents, modes, owners, xattrs, hardlinks,
// whiteouts) except for the files containerd's CRI mounts into /etc.
TEST_F(CriKeychainE2eTest, PrivateSociIndexedGzipPullsLazilyWithPullImageCredentialsAndRuns) {
  PullLazilyAndRun("soci", "soci");
  ASSERT_FALSE(HasFatalFailure());

  // Mount points containerd's CRI and runc add: the runtime's own dirs, and /etc/hosts,
  // /etc/hostname and /etc/resolv.conf (bind-mounted from the sandbox; runc creates the
  // targets the image lacks in the container's upper dir).
  const std::vector<std::string> runtime_dirs = {"proc", "sys", "dev", "run"};
  std::vector<std::string> etc_want, etc_got;
  for (const auto& e : std::filesystem::directory_iterator(env->soci_rootfs + "/etc")) {
    etc_want.push_back(e.path().filename());
  }
  etc_got = etc_want;
  for (const char* f : {"hostname", "hosts", "resolv.conf"}) {
    if (std::find(etc_want.begin(), etc_want.end(), f) == etc_want.end()) etc_got.push_back(f);
  }
  std::sort(etc_want.begin(), etc_want.end());
  std::sort(etc_got.begin(), etc_got.end());
  std::vector<std::string> known;
  if (etc_got != etc_want) {
    known.push_back(absl::StrCat("/etc: entries differ: expected [", absl::StrJoin(etc_want, ","),
                                 "] got [", absl::StrJoin(etc_got, ","), "]"));
  }
  std::vector<std::string> diffs;
  bool inspected = false;
  auto run = env->via_lazypull->RunContainer(
      "soci-tree-pod", PrivateRef("soci"), {"/bin/sleep", "600"}, env->dir.Sub("logs-soci-tree"),
      std::chrono::seconds(120), [&](const std::string& id) {
        const std::string rootfs = absl::StrCat(
            env->containerd->state(), "/io.containerd.runtime.v2.task/k8s.io/", id, "/rootfs");
        diffs = CompareTrees(env->soci_rootfs, rootfs, runtime_dirs);
        inspected = true;
      });
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(inspected);
  EXPECT_EQ(diffs, known) << "the container's tree differs from the image's:\n"
                          << absl::StrJoin(diffs.begin(),
                                           diffs.begin() + std::min<size_t>(diffs.size(), 40),
                                           "\n");
}

// Control: the same kind of pull sent to containerd directly — containerd pulls (it has the
// AuthConfig) but lazypull never saw the credentials, so its layers fall back to a normal
// unpack. This is the problem the keychain solves.
TEST_F(CriKeychainE2eTest, WithoutTheKeychainPrivateLayersFallBack) {
  const std::string ref = PrivateRef("ctl");
  grpc::Status s = env->via_containerd->PullImage(ref, BasicAuth(kUser, kPassword));
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto image = ResolvePushed(env->open_registry->host() + "/ctl:v1");
  ASSERT_TRUE(image.ok());
  const std::set<std::string> lazy = LazyLayerDigests(env->lazypull->root() + "/status.json");
  for (const oci::Descriptor& layer : image->resolved.manifest.layers) {
    EXPECT_FALSE(lazy.contains(layer.digest.ToString()))
        << "layer " << layer.digest.ToString() << " was mounted lazily without credentials";
  }
  EXPECT_TRUE(absl::StrContains(env->lazypull->ReadLog(), "no credentials are configured"));
  auto run = env->via_lazypull->RunContainer("ctl-pod", ref, {"/bin/sh", "-c", kRunScript},
                                             env->dir.Sub("logs-ctl"));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->output, ExpectedOutput("ctl"));
}

// kubelet must see the same error whether or not lazypull sits in front of containerd.
TEST_F(CriKeychainE2eTest, BadCredentialsGiveContainerdsOwnError) {
  struct Case {
    std::string what;
    std::string ref;
    std::optional<runtime::v1::AuthConfig> auth;
  };
  std::vector<Case> cases = {
      {"wrong password", PrivateRef("bad"), BasicAuth(kUser, "wrong-Pw-91c2")},
      {"no credentials", PrivateRef("bad"), std::nullopt},
      {"unknown tag", env->wire->host() + "/bad:missing", BasicAuth(kUser, kPassword)},
  };
  for (const Case& c : cases) {
    grpc::Status through = env->via_lazypull->PullImage(c.ref, c.auth);
    grpc::Status direct = env->via_containerd->PullImage(c.ref, c.auth);
    EXPECT_FALSE(direct.ok()) << c.what;
    EXPECT_EQ(through.error_code(), direct.error_code()) << c.what;
    EXPECT_EQ(through.error_message(), direct.error_message()) << c.what;
    std::cout << "[ error ] " << c.what << ": code " << direct.error_code() << ": "
              << direct.error_message() << "\n";
  }
  EXPECT_FALSE(absl::StrContains(env->lazypull->ReadLog(), "wrong-Pw-91c2"));
}

TEST_F(CriKeychainE2eTest, OtherImageServiceCallsAnswerAsContainerdDoes) {
  const std::string ref = PrivateRef("esgz");
  ASSERT_TRUE(env->via_lazypull->PullImage(ref, BasicAuth(kUser, kPassword)).ok());

  runtime::v1::ImageStatusResponse a, b;
  ASSERT_TRUE(env->via_lazypull->ImageStatus(ref, &a).ok());
  ASSERT_TRUE(env->via_containerd->ImageStatus(ref, &b).ok());
  EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
  EXPECT_TRUE(a.has_image());

  // containerd lists from a map: compare the images, not their order.
  runtime::v1::ListImagesResponse la, lb;
  ASSERT_TRUE(env->via_lazypull->ListImages(&la).ok());
  ASSERT_TRUE(env->via_containerd->ListImages(&lb).ok());
  auto sorted = [](const runtime::v1::ListImagesResponse& r) {
    std::vector<std::string> out;
    for (const auto& i : r.images()) out.push_back(i.SerializeAsString());
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(sorted(la), sorted(lb));
  EXPECT_GE(la.images_size(), 2);

  runtime::v1::ImageFsInfoResponse fa, fb;
  ASSERT_TRUE(env->via_lazypull->ImageFsInfo(&fa).ok());
  ASSERT_TRUE(env->via_containerd->ImageFsInfo(&fb).ok());
  ASSERT_EQ(fa.image_filesystems_size(), fb.image_filesystems_size());
  ASSERT_GE(fa.image_filesystems_size(), 1);
  EXPECT_EQ(fa.image_filesystems(0).fs_id().mountpoint(),
            fb.image_filesystems(0).fs_id().mountpoint());

  runtime::v1::ImageStatusResponse missing;
  ASSERT_TRUE(env->via_lazypull->ImageStatus("no/such:image", &missing).ok());
  EXPECT_FALSE(missing.has_image());

  // RemoveImage through lazypull removes it in containerd.
  const std::string ctl = PrivateRef("bad");
  ASSERT_TRUE(env->via_containerd->PullImage(ctl, BasicAuth(kUser, kPassword)).ok());
  ASSERT_TRUE(env->via_lazypull->RemoveImage(ctl).ok());
  runtime::v1::ImageStatusResponse gone;
  ASSERT_TRUE(env->via_containerd->ImageStatus(ctl, &gone).ok());
  EXPECT_FALSE(gone.has_image());
}

// Runs last (gtest keeps definition order): after every pull above, the password is nowhere in
// lazypull's log (debug level) or its state directory.
TEST_F(CriKeychainE2eTest, CredentialsNeverReachLogsOrDisk) {
  ASSERT_TRUE(env->via_lazypull->PullImage(PrivateRef("esgz"), BasicAuth(kUser, kPassword)).ok());
  std::string log = env->lazypull->ReadLog();
  EXPECT_TRUE(absl::StrContains(log, "CRI PullImage forwarded")) << "no pull was logged";
  EXPECT_FALSE(absl::StrContains(log, kPassword)) << "password in lazypull's log";
  // base64 forms of user:password too.
  auto b64 = RunShell(absl::StrCat("printf '%s' '", kUser, ":", kPassword, "' | base64 -w0"),
                      std::chrono::seconds(5));
  ASSERT_TRUE(b64.ok());
  EXPECT_FALSE(absl::StrContains(log, b64->output));
  // Files under the root, without descending into lazily mounted layers.
  auto grep = RunShell(absl::StrCat("grep -rlF --exclude-dir=fs '", kPassword, "' ",
                                    env->lazypull->root(), "; true"),
                       std::chrono::seconds(60));
  ASSERT_TRUE(grep.ok());
  EXPECT_EQ(grep->output, "") << "password on disk";
}

}  // namespace
}  // namespace lazypull::testing
