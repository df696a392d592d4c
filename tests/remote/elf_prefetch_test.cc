// ELF-aware startup prefetch (issue 18) through the real daemon, on FUSE and EROFS: an image of
// two lazy eStargz layers — this machine's curl, its interpreter, its 31 libraries (four
// DT_NEEDED levels deep) and its /etc/ld.so.cache below, /usr/bin/curl above — pushed to a
// real docker-registry. The first read of curl's header walks the dependency graph across
// both layers and fetches every file the loader will open; exec then needs no fetch at all.
// Without the prefetch, each file costs the program its own miss. Serial depth is counted
// from the readers' counters (demand_fetches: fetches a read started for its own miss).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kBinary[] = "/usr/bin/curl";

// Adds host path `path` to `layer` as the image would hold it: every symlink on the way as a
// symlink, the file itself with its bytes and mode. `added` avoids duplicates.
absl::Status AddHostPath(const std::string& path, LayerChanges& layer, std::set<std::string>& added,
                         int depth = 0) {
  if (depth > 16) return absl::InvalidArgumentError("symlink loop at " + path);
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  std::string cur;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string candidate = cur + "/" + parts[i];
    struct stat st;
    if (::lstat(candidate.c_str(), &st) != 0) return absl::NotFoundError(candidate);
    if (S_ISLNK(st.st_mode)) {
      const std::string target = fs::read_symlink(candidate).string();
      if (added.insert(candidate).second) layer.symlinks.push_back({candidate, target});
      std::string rest;
      for (size_t j = i + 1; j < parts.size(); ++j) rest += "/" + parts[j];
      const std::string next = target.front() == '/' ? target + rest : cur + "/" + target + rest;
      return AddHostPath(fs::path(next).lexically_normal().string(), layer, added, depth + 1);
    }
    if (S_ISREG(st.st_mode)) {
      if (i + 1 != parts.size()) return absl::NotFoundError(candidate + " is not a directory");
      if (!added.insert(candidate).second) return absl::OkStatus();
      absl::StatusOr<std::string> content = ReadFile(candidate);
      if (!content.ok()) return content.status();
      layer.files.push_back({.path = candidate,
                             .content = *content,
                             .mode = st.st_mode & 07777,
                             .mtime = st.st_mtime});
      return absl::OkStatus();
    }
    cur = candidate;
  }
  return absl::OkStatus();
}

// The interpreter and libraries `ldd` lists for `binary`.
absl::StatusOr<std::vector<std::string>> LddPaths(const std::string& binary = kBinary) {
  auto ldd = RunCommand({"ldd", binary}, std::chrono::seconds(30));
  if (!ldd.ok()) return ldd.status();
  if (ldd->exit_code != 0) return absl::InternalError("ldd: " + ldd->output);
  std::vector<std::string> paths;
  for (absl::string_view line : absl::StrSplit(ldd->output, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "\t/lib64/ld-linux... (0x)"
    for (std::string& w : f) {
      absl::string_view t = absl::StripAsciiWhitespace(w);
      if (absl::StartsWith(t, "/")) paths.emplace_back(t);
    }
  }
  return paths;
}

struct Image {
  absl::Status status = absl::UnknownError("not built");
  TempDir dir{"lpelf"};
  std::unique_ptr<RegistryProcess> registry;
  size_t objects = 0;        // curl, its interpreter and libraries
  std::string host_version;  // `curl --version` on this machine
};
Image* image = nullptr;

// Starts the image's registry and pushes two eStargz images of layers `base` and `top`:
// esgz:v1 without a command and esgz-cmd:v1 (same layers) running `cmd`.
absl::Status PushImages(Image& im, const LayerChanges& base, const LayerChanges& top,
                        const std::vector<std::string>& cmd, const std::string& convert_flags) {
  auto reg = RegistryProcess::Start(im.dir.Sub("reg"));
  if (!reg.ok()) return reg.status();
  im.registry = std::move(*reg);
  const std::string host = im.registry->host();
  for (bool with_cmd : {false, true}) {
    ImageBuilder b(im.dir.Sub(with_cmd ? "image-cmd" : "image"));
    b.AddLayer(base).AddLayer(top);
    if (with_cmd) b.SetCmd(cmd);
    auto built = b.Build("v1");
    if (!built.ok()) return built.status();
    const std::string src = with_cmd ? "src-cmd:v1" : "src:v1";
    if (absl::Status s = im.registry->PushOciLayout(built->layout_dir, "v1", src); !s.ok()) {
      return s;
    }
    if (absl::Status s =
            LazypullConvert("estargz", host + "/" + src,
                            host + (with_cmd ? "/esgz-cmd:v1" : "/esgz:v1"), convert_flags);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status BuildImage(Image& im) {
  absl::StatusOr<std::vector<std::string>> libs = LddPaths();
  if (!libs.ok()) return libs.status();
  im.objects = libs->size() + 1;
  LayerChanges base, top;
  std::set<std::string> added_base, added_top;
  for (const std::string& p : *libs) {
    if (absl::Status s = AddHostPath(p, base, added_base); !s.ok()) return s;
  }
  if (absl::Status s = AddHostPath("/etc/ld.so.cache", base, added_base); !s.ok()) return s;
  // Files the libraries name in their data (no loader opens them): glibc's nsswitch.conf and,
  // through the OPENSSLDIR symlink, the openssl.cnf libcrypto reads; the walk fetches them.
  for (const char* named : {"/etc/nsswitch.conf", "/usr/lib/ssl/openssl.cnf"}) {
    if (absl::Status s = AddHostPath(named, base, added_base); !s.ok()) return s;
  }
  if (absl::Status s = AddHostPath(kBinary, top, added_top); !s.ok()) return s;
  // Small chunks, so libraries span several chunks and "whole file" means something.
  if (absl::Status s = PushImages(im, base, top, {"curl", "--version"}, "--chunk-size 65536");
      !s.ok()) {
    return s;
  }
  auto version = RunCommand({kBinary, "--version"}, std::chrono::seconds(30));
  if (!version.ok()) return version.status();
  im.host_version = version->output;
  return absl::OkStatus();
}

class ElfPrefetchTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    image = new Image;
    image->status = BuildImage(*image);
  }
  static void TearDownTestSuite() {
    delete image;
    image = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(image->status.ok()) << image->status; }
  void TearDown() override {
    mounts_.clear();
    client_.reset();
    if (daemon_ != nullptr) {
      EXPECT_EQ(daemon_->Stop(), absl::OkStatus());
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
    }
  }

  // Background fetch (unless `background`) and eStargz prefetch off: every byte moved is a
  // read's or a prefetch's.
  void StartDaemon(const std::string& mount_extra, bool background = false) {
    SnapshotterOptions options;
    options.config_toml = absl::StrCat("[mount]\nbackend = \"", GetParam(),
                                       "\"\nbackground_fetch = ", background ? "true" : "false",
                                       "\nprefetch = false\n", "graduation = false\n", mount_extra,
                                       "[remote]\nstatus_interval_ms = 100\n");
    options.log_level = "debug";
    auto d = SnapshotterProcess::Start(tmp_.Sub("daemon"), options);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = std::move(*d);
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  }

  // Prepares both layers lazily and mounts a container's rootfs on them.
  // Prepares the image's layers as a pull does (no container). Returns the top layer's key.
  std::string PullImage(const std::string& repo) {
    auto pushed = ResolvePushed(image->registry->host() + "/" + repo + ":v1");
    EXPECT_TRUE(pushed.ok()) << pushed.status();
    if (!pushed.ok()) return "";
    std::string parent;
    for (size_t i = 0; i < pushed->resolved.manifest.layers.size(); ++i) {
      std::string target = absl::StrCat("layer-", i);
      grpc::Status s =
          client_->Prepare(absl::StrCat("extract-", i), parent, StargzLabels(*pushed, i, target));
      EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
      parent = target;
    }
    return parent;
  }

  std::string MountImage(const std::string& repo = "esgz") {
    const std::string parent = PullImage(repo);
    if (parent.empty()) return "";
    MountList mounts;
    grpc::Status s = client_->Prepare("container", parent, {}, &mounts);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::string dir = tmp_.Sub("rootfs");
    fs::create_directories(dir);
    auto m = ScopedMount::Mount(mounts, dir);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) mounts_.push_back(std::move(*m));
    return dir;
  }

  nlohmann::json Status() {
    auto text = ReadFile(daemon_->root() + "/status.json");
    if (!text.ok()) return nlohmann::json::object();
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
    return j.is_object() ? j : nlohmann::json::object();
  }
  // Sum of a per-layer counter over the mounted layers, from a fresh status.json.
  uint64_t LayerSum(const nlohmann::json& st, const std::string& key) {
    uint64_t sum = 0;
    for (const auto& l : st.value("layers", nlohmann::json::array())) sum += l.value(key, 0ull);
    return sum;
  }
  // Prepares esgz-cmd's base layer (of two) as ctr-remote's pull does, and nothing else: the
  // top layer is only preloaded. Sets `*out` to the image as pushed. Fatal failure if the layer
  // is not remote.
  void PrepareOnlyTheBaseLayer(PushedImage* out) {
    auto pushed = ResolvePushed(image->registry->host() + "/esgz-cmd:v1");
    ASSERT_TRUE(pushed.ok()) << pushed.status();
    ASSERT_EQ(pushed->resolved.manifest.layers.size(), 2u);
    *out = *pushed;
    grpc::Status s = client_->Prepare("extract-0", "", StargzLabels(*pushed, 0, "layer-0"));
    ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }
  // One start hint, whose walk found kBinary and all of its objects.
  void ExpectTheHintWalkedTheBinary(const nlohmann::json& st) {
    EXPECT_EQ(st["elf_prefetch"].value("start_hints", 0), 1) << st["elf_prefetch"].dump();
    EXPECT_EQ(st["elf_prefetch"].value("last_executable", ""), kBinary);
    EXPECT_EQ(st["elf_prefetch"].value("last_objects", 0u), image->objects);
  }
  // One start hint and one walk in all (the container's Prepare did not walk again).
  void ExpectOneHintAndOneWalk(const nlohmann::json& st) {
    EXPECT_EQ(st["elf_prefetch"].value("start_hints", 0), 1) << st["elf_prefetch"].dump();
    EXPECT_EQ(st["elf_prefetch"].value("walks_started", 0), 1) << st["elf_prefetch"].dump();
  }
  // Whether a walk finished within 60 s (elf_prefetch.walks_finished >= 1 in status.json).
  bool WaitForFinishedWalk() {
    return WaitUntil(
        [&] {
          return Status()
                     .value("elf_prefetch", nlohmann::json::object())
                     .value("walks_finished", 0) >= 1;
        },
        std::chrono::seconds(60));
  }
  // A status.json written after everything before this call (the writer runs every 100 ms).
  nlohmann::json FreshStatus() {
    const std::string before = Status().value("updated", "");
    WaitUntil([&] { return Status().value("updated", "") != before; });
    return Status();
  }

  // Whether both layers are mounted and every chunk of them is local.
  bool AllLayersLocal() {
    nlohmann::json st = Status();
    if (st.value("layers", nlohmann::json::array()).size() != 2) return false;
    for (const auto& l : st["layers"]) {
      if (l.value("local_chunks", 0) != l.value("total_chunks", -1)) return false;
    }
    return true;
  }

  std::string Exec(const std::string& rootfs) {
    auto run = RunCommand({"chroot", rootfs, kBinary, "--version"}, std::chrono::seconds(60));
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return "";
    EXPECT_EQ(run->exit_code, 0) << run->output;
    return run->output;
  }

  TempDir tmp_{"lpelft"};
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
  std::vector<std::unique_ptr<ScopedMount>> mounts_;
};

// Reading curl's first bytes walks its dependency graph across both layers and fetches every
// file the loader will open, whole: exec then starts no fetch at all.
TEST_P(ElfPrefetchTest, FirstReadOfAnExecutableFetchesItsInterpreterAndLibraries) {
  StartDaemon("");
  const std::string rootfs = MountImage();
  ASSERT_FALSE(rootfs.empty());
  char head[64];
  {
    int fd = ::open((rootfs + kBinary).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::read(fd, head, sizeof(head)), static_cast<ssize_t>(sizeof(head)));
    ::close(fd);
  }
  ASSERT_TRUE(WaitForFinishedWalk()) << Status().dump(2);
  // The walk ends when it knows every file; the files' bodies may still be arriving. Then
  // every chunk of both layers is local: the layers hold only what the loader opens.
  EXPECT_TRUE(WaitUntil([&] { return AllLayersLocal(); }, std::chrono::seconds(60)))
      << Status().dump(2);
  nlohmann::json st = FreshStatus();
  const nlohmann::json& elf = st["elf_prefetch"];
  EXPECT_EQ(elf.value("walks_started", 0), 1) << elf.dump();
  EXPECT_EQ(elf.value("last_executable", ""), kBinary);
  EXPECT_EQ(elf.value("last_objects", 0u), image->objects) << elf.dump();
  EXPECT_EQ(elf.value("problems", 1), 0) << elf.dump();
  // Parallel: a few rounds per dependency level (curl's graph is five levels deep), far fewer
  // than one per file.
  EXPECT_LE(elf.value("last_rounds", 99u) * 2, image->objects) << elf.dump();
  // Only the first read of curl was a miss of the program's own.
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 1u) << st.dump(2);
  const uint64_t requests_before = LayerSum(st, "requests");

  EXPECT_EQ(Exec(rootfs), image->host_version);
  st = FreshStatus();
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 1u) << st.dump(2);
  EXPECT_EQ(LayerSum(st, "requests"), requests_before) << st.dump(2);
}

// Cold exec: with the prefetch, the program's own misses are a fraction of the files it opens;
// without it (and without readahead or batches), every file costs at least one.
TEST_P(ElfPrefetchTest, ColdExecMissesLessThanOncePerFileOnlyWithThePrefetch) {
  StartDaemon("elf_prefetch = false\ndirectory_batch = 0\nreadahead_window = 0\n");
  std::string rootfs = MountImage();
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(Exec(rootfs), image->host_version);
  nlohmann::json st = FreshStatus();
  const uint64_t without = LayerSum(st, "demand_fetches");
  EXPECT_FALSE(st.contains("elf_prefetch"));
  EXPECT_GE(without, image->objects + 1) << st.dump(2);  // + /etc/ld.so.cache
  std::cerr << "serial depth without ELF prefetch: " << without << "\n";
}

TEST_P(ElfPrefetchTest, ColdExecWithThePrefetch) {
  StartDaemon("directory_batch = 0\nreadahead_window = 0\n");
  std::string rootfs = MountImage();
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(Exec(rootfs), image->host_version);
  ASSERT_TRUE(WaitForFinishedWalk()) << Status().dump(2);
  nlohmann::json st = FreshStatus();
  const uint64_t with = LayerSum(st, "demand_fetches");
  std::cerr << "serial depth with ELF prefetch: " << with << "\n" << st["elf_prefetch"].dump();
  // The loader races the walk level by level; it may win a few files, never most of them.
  EXPECT_LE(with, image->objects / 2) << st.dump(2);
  EXPECT_GE(st["elf_prefetch"].value("objects", 0u), image->objects);
}

// The image's command is walked as soon as a container's rootfs is prepared on the image,
// before any read: the container then starts without a single fetch of its own.
TEST_P(ElfPrefetchTest, ImageCommandIsFetchedBeforeTheContainerStarts) {
  StartDaemon("");
  const std::string rootfs = MountImage("esgz-cmd");
  ASSERT_FALSE(rootfs.empty());
  ASSERT_TRUE(WaitForFinishedWalk()) << Status().dump(2);
  EXPECT_TRUE(WaitUntil([&] { return AllLayersLocal(); }, std::chrono::seconds(60)))
      << Status().dump(2);
  nlohmann::json st = FreshStatus();
  // One hint: the container's rootfs was prepared on the image's layers.
  EXPECT_EQ(st["elf_prefetch"].value("start_hints", 0), 1) << st["elf_prefetch"].dump();
  EXPECT_EQ(st["elf_prefetch"].value("walks_started", 0), 1) << st["elf_prefetch"].dump();
  EXPECT_EQ(st["elf_prefetch"].value("last_executable", ""), kBinary);
  EXPECT_EQ(st["elf_prefetch"].value("last_objects", 0u), image->objects);
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 0u) << st.dump(2);
  // nsswitch.conf (glibc) and openssl.cnf (libcrypto): named in the libraries' data.
  EXPECT_EQ(st["elf_prefetch"].value("embedded_files", 0), 2) << st["elf_prefetch"].dump();
  EXPECT_EQ(Exec(rootfs), image->host_version);
  EXPECT_EQ(LayerSum(FreshStatus(), "demand_fetches"), 0u);
}

// With background fetch on (the default), the pull is followed by a fetch of the whole image
// anyway: the program the image starts is walked as soon as its top layer is mounted, before
// any container exists, and the container's Prepare does not walk it again.
TEST_P(ElfPrefetchTest, WithBackgroundFetchThePullStartsTheImagesProgram) {
  StartDaemon("", /*background=*/true);
  ASSERT_FALSE(PullImage("esgz-cmd").empty());
  ASSERT_TRUE(WaitForFinishedWalk()) << Status().dump(2);
  nlohmann::json st = FreshStatus();
  ExpectTheHintWalkedTheBinary(st);
  const std::string rootfs = MountImage("esgz-cmd");
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(Exec(rootfs), image->host_version);
  st = FreshStatus();
  ExpectOneHintAndOneWalk(st);
}

// With background fetch on, the program is walked as soon as every layer of the image has a
// reader: at the first layer's Prepare, through the other layers' preloaded readers, before
// containerd prepares the top layer. The top layer's mount then adopts the reader the walk
// fetched through (its counters hold the walk's chunks), and nothing walks the program again.
TEST_P(ElfPrefetchTest, WithBackgroundFetchTheFirstLayersPrepareStartsTheImagesProgram) {
  StartDaemon("", /*background=*/true);
  PushedImage pushed;
  PrepareOnlyTheBaseLayer(&pushed);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForFinishedWalk()) << Status().dump(2);
  nlohmann::json st = FreshStatus();
  // Only the base layer is mounted, yet the walk found every object of both layers.
  EXPECT_EQ(st.value("layers", nlohmann::json::array()).size(), 1u) << st.dump(2);
  ExpectTheHintWalkedTheBinary(st);

  grpc::Status s = client_->Prepare("extract-1", "layer-0", StargzLabels(pushed, 1, "layer-1"));
  ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  st = FreshStatus();
  const std::string top = pushed.resolved.manifest.layers[1].digest.ToString();
  size_t tops = 0;
  for (const auto& l : st.value("layers", nlohmann::json::array())) {
    if (l.value("digest", "") != top) continue;
    ++tops;
    // The walk's chunks, fetched before this mount through the reader it adopted.
    EXPECT_GT(l.value("ahead_chunks", 0ull), 0u) << l.dump();
    EXPECT_EQ(l.value("demand_fetches", 1ull), 0u) << l.dump();
  }
  EXPECT_EQ(tops, 1u) << st.dump(2);

  const std::string rootfs = MountImage("esgz-cmd");
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(Exec(rootfs), image->host_version);
  st = FreshStatus();
  ExpectOneHintAndOneWalk(st);
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 0u) << st.dump(2);
}

// Python: this machine's python3.11 with its libraries (base layer) and the part of its
// standard library a `python3 -c "import json; ..."` start reads from, plus packages it does
// not (top layer), so that only the import walks can explain what gets fetched.
constexpr char kPython[] = "/usr/bin/python3.11";
constexpr char kPythonCode[] = "import json; print(6*7)";

absl::Status BuildPythonImage(Image& im) {
  absl::StatusOr<std::vector<std::string>> libs = LddPaths(kPython);
  if (!libs.ok()) return libs.status();
  LayerChanges base, top;
  std::set<std::string> added_base, added_top;
  for (const std::string& p : *libs) {
    if (absl::Status s = AddHostPath(p, base, added_base); !s.ok()) return s;
  }
  for (const char* p : {"/etc/ld.so.cache", "/usr/lib/locale/C.utf8/LC_CTYPE",
                        "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"}) {
    if (absl::Status s = AddHostPath(p, base, added_base); !s.ok()) return s;
  }
  for (const char* p : {"/usr/bin/python3", kPython}) {
    if (absl::Status s = AddHostPath(p, top, added_top); !s.ok()) return s;
  }
  const std::string lib = "/usr/lib/python3.11";
  for (const auto& e : fs::recursive_directory_iterator(lib)) {
    const std::string path = e.path().string();
    const std::string rel = path.substr(lib.size() + 1);
    const bool wanted = rel.find('/') == std::string::npos || rel.starts_with("__pycache__/") ||
                        rel.starts_with("encodings/") || rel.starts_with("json/") ||
                        rel.starts_with("re/") || rel.starts_with("collections/") ||
                        rel.starts_with("importlib/") || rel.starts_with("email/") ||
                        rel.starts_with("lib-dynload/");
    if (!wanted || e.is_directory()) continue;
    if (absl::Status s = AddHostPath(path, top, added_top); !s.ok()) return s;
  }
  if (absl::Status s = PushImages(im, base, top, {"python3", "-c", kPythonCode}, ""); !s.ok()) {
    return s;
  }
  im.host_version = "42\n";
  return absl::OkStatus();
}

class PythonPrefetchTest : public ElfPrefetchTest {
 protected:
  static void SetUpTestSuite() {
    image = new Image;
    image->status = BuildPythonImage(*image);
  }

  std::string ExecPython(const std::string& rootfs) {
    auto run =
        RunCommand({"chroot", rootfs, "python3", "-c", kPythonCode}, std::chrono::seconds(60));
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return "";
    EXPECT_EQ(run->exit_code, 0) << run->output;
    return run->output;
  }

  bool PythonWalksDone() {
    const nlohmann::json e = Status().value("elf_prefetch", nlohmann::json::object());
    return e.value("walks_finished", 0) >= 1 && e.value("python_walks", 0) >= 1 &&
           e.value("python_walks_finished", 0) == e.value("python_walks", 0);
  }
};

// The image's command is `python3 -c "import json; ..."`: preparing the container's rootfs walks
// the interpreter's libraries, what every CPython start reads and the code's imports, so the
// program starts without a fetch of its own.
TEST_P(PythonPrefetchTest, ImportsOfTheImagesCommandAreFetchedBeforeItStarts) {
  StartDaemon("");
  const std::string rootfs = MountImage("esgz-cmd");
  ASSERT_FALSE(rootfs.empty());
  ASSERT_TRUE(WaitUntil([&] { return PythonWalksDone(); }, std::chrono::seconds(60)))
      << Status().dump(2);
  nlohmann::json st = FreshStatus();
  const nlohmann::json& e = st["elf_prefetch"];
  EXPECT_EQ(e.value("python_problems", 1), 0) << e.dump();
  // encodings (3), sitecustomize, json (4), re (5), enum, types, operator, functools,
  // collections, keyword, reprlib, copyreg, _json, locale data: more than 20 files.
  EXPECT_GE(e.value("python_files", 0), 20) << e.dump();
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 0u) << st.dump(2);
  EXPECT_EQ(ExecPython(rootfs), image->host_version);
  st = FreshStatus();
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 0u) << st.dump(2);
}

// With background fetch on, the first layer's Prepare starts the walks through the top layer's
// preloaded reader: the interpreter's Python start walk uses the same stack as its ELF walk,
// so the imports (all in the top layer, not mounted yet) are fetched before the top layer's
// Prepare.
TEST_P(PythonPrefetchTest, WithBackgroundFetchTheFirstLayersPrepareWalksTheImports) {
  StartDaemon("", /*background=*/true);
  PushedImage pushed;
  PrepareOnlyTheBaseLayer(&pushed);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitUntil([&] { return PythonWalksDone(); }, std::chrono::seconds(60)))
      << Status().dump(2);
  nlohmann::json st = FreshStatus();
  EXPECT_EQ(st.value("layers", nlohmann::json::array()).size(), 1u) << st.dump(2);
  const nlohmann::json& e = st["elf_prefetch"];
  EXPECT_EQ(e.value("python_problems", 1), 0) << e.dump();
  EXPECT_GE(e.value("python_files", 0), 20) << e.dump();
  const std::string rootfs = MountImage("esgz-cmd");
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(ExecPython(rootfs), image->host_version);
  st = FreshStatus();
  EXPECT_EQ(LayerSum(st, "demand_fetches"), 0u) << st.dump(2);
}

// No command in the image: the exec of python itself starts the walks, racing the interpreter.
// Without any prefetch every module is a miss of its own (32 here); with it, the start's serial
// depth is a handful (5 measured; bench/coldstart's python target is 6): racing a local
// registry, a level of imports may arrive just after the interpreter asks, so the bound here
// is a quarter of the misses without.
TEST_P(PythonPrefetchTest, ColdStartWithoutPrefetchMissesPerModule) {
  StartDaemon("elf_prefetch = false\ndirectory_batch = 0\nreadahead_window = 0\n");
  const std::string rootfs = MountImage();
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(ExecPython(rootfs), image->host_version);
  const uint64_t without = LayerSum(FreshStatus(), "demand_fetches");
  std::cerr << "python serial depth without prefetch: " << without << "\n";
  EXPECT_GE(without, 25u);
}

TEST_P(PythonPrefetchTest, ColdStartWithPrefetch) {
  StartDaemon("directory_batch = 0\nreadahead_window = 0\n");
  const std::string rootfs = MountImage();
  ASSERT_FALSE(rootfs.empty());
  EXPECT_EQ(ExecPython(rootfs), image->host_version);
  ASSERT_TRUE(WaitUntil([&] { return PythonWalksDone(); }, std::chrono::seconds(60)));
  nlohmann::json st = FreshStatus();
  const uint64_t with = LayerSum(st, "demand_fetches");
  std::cerr << "python serial depth with prefetch: " << with << "\n" << st["elf_prefetch"].dump();
  EXPECT_LE(with, 8u) << st.dump(2);
  EXPECT_GE(st["elf_prefetch"].value("python_walks", 0), 2);  // the interpreter, json's .pyc
}

INSTANTIATE_TEST_SUITE_P(Backends, PythonPrefetchTest, ::testing::Values("fuse", "erofs"),
                         [](const auto& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(Backends, ElfPrefetchTest, ::testing::Values("fuse", "erofs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lazypull::testing
