// Private image data stays private (label root; issue 17, defect 4). The daemon's root is
// created 0755 beforehand (as kubelet's hostPath DirectoryOrCreate does); the daemon starts on
// it, a one-layer image is lazily mounted (FUSE and EROFS backends) and read through a
// container's overlay. Then, as user nobody (setpriv), every file and directory under the root
// — chunk cache, metadata.db, status.json, the lock, the EROFS blob file system's files — fails
// to open with EACCES; again after the root and the daemon's own directories are loosened to
// 0755 (the files' own modes must hold). The container's view keeps the image's modes: nobody
// reads the image's 0644 files (cold, so the EROFS backend reads its blob for nobody) and its
// own 0600 file, and not root's 0600 file.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "lazypull/digest.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;

// Opens (and reads) each path listed in argv[1] as whoever runs it; one line per path:
// "<errno> <path>", or "0 <size> <sha256 hex> <path>" when it could be read.
constexpr char kOpenEach[] = R"(
import hashlib, os, sys
for p in open(sys.argv[1]).read().split('\n'):
    if not p:
        continue
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as e:
        print(e.errno, p)
        continue
    try:
        h, n = hashlib.sha256(), 0
        if not os.path.isdir(p):
            while True:
                b = os.read(fd, 1 << 16)
                if not b:
                    break
                h.update(b)
                n += len(b)
        print(0, n, h.hexdigest(), p)
    except OSError as e:
        print(e.errno, p)
    finally:
        os.close(fd)
)";

struct OpenResult {
  int error = -1;  // errno, 0 = read
  uint64_t size = 0;
  std::string sha256;
};

// Opens every path of `paths` as nobody (setpriv, no supplementary groups).
std::map<std::string, OpenResult> OpenAsNobody(const std::vector<std::string>& paths,
                                               const std::string& list_file) {
  std::string list;
  for (const std::string& p : paths) list += p + "\n";
  EXPECT_TRUE(WriteFile(list_file, list).ok());
  ::chmod(list_file.c_str(), 0644);
  auto r = RunCommand({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       "/usr/bin/python3", "-c", kOpenEach, list_file});
  std::map<std::string, OpenResult> out;
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return out;
  EXPECT_EQ(r->exit_code, 0) << r->output;
  for (absl::string_view line : absl::StrSplit(r->output, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 1));
    OpenResult res;
    if (f.size() != 2 || !absl::SimpleAtoi(f[0], &res.error)) {
      ADD_FAILURE() << "unexpected output line: " << line;
      continue;
    }
    std::string path = f[1];
    if (res.error == 0) {
      std::vector<std::string> g = absl::StrSplit(f[1], absl::MaxSplits(' ', 2));
      if (g.size() != 3 || !absl::SimpleAtoi(g[0], &res.size)) {
        ADD_FAILURE() << "unexpected output line: " << line;
        continue;
      }
      res.sha256 = g[1];
      path = g[2];
    }
    out[path] = res;
  }
  EXPECT_EQ(out.size(), paths.size()) << r->output;
  return out;
}

// Every regular file and directory under `root` (the root included), walked as root, not
// descending into the snapshots' fs directories (the containers' own views).
struct Tree {
  std::vector<std::string> files;
  std::vector<std::string> dirs;
};
Tree Walk(const std::string& root) {
  Tree t;
  t.dirs.push_back(root);
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      ADD_FAILURE() << "walking " << root << ": " << ec.message();
      break;
    }
    const fs::path& p = it->path();
    const fs::file_status st = it->symlink_status();
    if (fs::is_directory(st)) {
      t.dirs.push_back(p.string());
      if (p.filename() == "fs" && p.parent_path().parent_path() == fs::path(root) / "snapshots") {
        it.disable_recursion_pending();
      }
    } else if (fs::is_regular_file(st)) {
      t.files.push_back(p.string());
    }
  }
  return t;
}

bool IsMountPoint(const std::string& path) {
  struct stat self, parent;
  return ::stat(path.c_str(), &self) == 0 &&
         ::stat(fs::path(path).parent_path().c_str(), &parent) == 0 && self.st_dev != parent.st_dev;
}

// The super options of the mount at `path` (mountinfo's last field).
std::string SuperOptions(const std::string& path) {
  auto info = ReadFile("/proc/self/mountinfo");
  EXPECT_TRUE(info.ok());
  std::string found;
  for (absl::string_view line : absl::StrSplit(info.ok() ? *info : "", '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 4 && f[4] == path) found = f.back();
  }
  return found;
}

std::string PublicContent(int i) { return RandomBytes(200 << 10, 700 + i); }
const std::string kSecret = "root's secret: not for nobody\n";
const std::string kNobodyOwn = "nobody's own file\n";

class PrivateDataTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // Where nobody must reach: the container's mount (not the daemon's root).
    ASSERT_EQ(::chmod(tmp_.path().c_str(), 0755), 0);
    auto reg = RegistryProcess::Start(tmp_.Sub("reg"));
    ASSERT_TRUE(reg.ok()) << reg.status();
    registry_ = std::move(*reg);
    ImageBuilder b(tmp_.Sub("image"));
    LayerChanges files;
    for (int i = 0; i < 3; ++i) {
      files.files.push_back({.path = absl::StrCat("/pub/f", i), .content = PublicContent(i)});
    }
    files.files.push_back({.path = "/secret/key", .content = kSecret, .mode = 0600});
    files.files.push_back({.path = "/home/nobody/own",
                           .content = kNobodyOwn,
                           .mode = 0600,
                           .uid = kNobody,
                           .gid = 65534});
    b.AddLayer(files);
    auto built = b.Build("v1");
    ASSERT_TRUE(built.ok()) << built.status();
    const std::string host = registry_->host();
    ASSERT_TRUE(registry_->PushOciLayout(built->layout_dir, "v1", "src:v1").ok());
    ASSERT_TRUE(LazypullConvert("estargz", host + "/src:v1", host + "/private:v1").ok());
  }
  void TearDown() override {
    container_.reset();
    client_.reset();
    if (daemon_ != nullptr) {
      EXPECT_EQ(daemon_->Stop(), absl::OkStatus());
      if (HasFailure()) std::cerr << "--- daemon log ---\n" << daemon_->ReadLog();
    }
  }

  TempDir tmp_{"lppriv"};
  std::unique_ptr<RegistryProcess> registry_;
  std::unique_ptr<SnapshotterProcess> daemon_;
  std::unique_ptr<SnapshotClient> client_;
  std::unique_ptr<ScopedMount> container_;
};

TEST_P(PrivateDataTest, NobodyReadsNothingUnderTheRootButTheContainerKeepsImageModes) {
  const std::string work = tmp_.Sub("daemon");
  const std::string root = work + "/root";
  fs::create_directories(root);
  ASSERT_EQ(::chmod(root.c_str(), 0755), 0);  // as kubelet's hostPath DirectoryOrCreate
  SnapshotterOptions options;
  const std::string metrics_address = absl::StrCat("127.0.0.1:", PickFreePort());
  options.metrics_address = metrics_address;
  options.config_toml = absl::StrCat("[mount]\nbackend = \"", GetParam(),
                                     "\"\ngraduation = false\nbackground_fetch = false\n"
                                     "[remote]\nstatus_interval_ms = 50\n");
  auto d = SnapshotterProcess::Start(work, options);
  ASSERT_TRUE(d.ok()) << d.status();
  daemon_ = std::move(*d);
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  struct stat st;
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u) << "the root's mode is not enforced at start";

  // A lazy pull and a container on it.
  auto image = ResolvePushed(registry_->host() + "/private:v1");
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->resolved.manifest.layers.size(), 1u);
  grpc::Status s = client_->Prepare("extract-0", "", StargzLabels(*image, 0, "layer-0"));
  ASSERT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  MountList mounts;
  ASSERT_TRUE(client_->Prepare("container", "layer-0", {}, &mounts).ok());
  const std::string mnt = tmp_.Sub("container");
  fs::create_directories(mnt);
  ::chmod(mnt.c_str(), 0755);
  auto m = ScopedMount::Mount(mounts, mnt);
  ASSERT_TRUE(m.ok()) << m.status();
  container_ = std::move(*m);

  // The container's view: the image's modes; nobody reads what the image lets it read (f1 and
  // f2 cold: their first bytes are fetched for nobody's reads), root reads the rest.
  auto f0 = ReadFile(mnt + "/pub/f0");
  ASSERT_TRUE(f0.ok());
  EXPECT_TRUE(*f0 == PublicContent(0));
  for (const auto& [path, mode] : std::vector<std::pair<std::string, mode_t>>{
           {"/pub/f0", 0644}, {"/secret/key", 0600}, {"/home/nobody/own", 0600}}) {
    ASSERT_EQ(::stat((mnt + path).c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 07777, mode) << path;
  }
  std::map<std::string, OpenResult> view = OpenAsNobody(
      {mnt + "/pub/f1", mnt + "/pub/f2", mnt + "/home/nobody/own", mnt + "/secret/key"},
      tmp_.Sub("view-list"));
  for (int i : {1, 2}) {
    const OpenResult& r = view[absl::StrCat(mnt, "/pub/f", i)];
    EXPECT_EQ(r.error, 0) << i;
    EXPECT_EQ(r.size, PublicContent(i).size()) << i;
    EXPECT_EQ(r.sha256, Digest::Of(PublicContent(i)).hex()) << i;
  }
  EXPECT_EQ(view[mnt + "/home/nobody/own"].error, 0);
  EXPECT_EQ(view[mnt + "/home/nobody/own"].sha256, Digest::Of(kNobodyOwn).hex());
  EXPECT_EQ(view[mnt + "/secret/key"].error, EACCES);
  auto secret = ReadFile(mnt + "/secret/key");
  ASSERT_TRUE(secret.ok());
  EXPECT_EQ(*secret, kSecret);
  ASSERT_TRUE(
      WaitUntil([&] { return fs::exists(root + "/status.json"); }, std::chrono::seconds(30)));

  // Metrics name layers by digest only: no image reference, repository or registry host.
  auto scrape = RunCommand(
      {"curl", "-sS", "--fail", "--max-time", "10", "http://" + metrics_address + "/metrics"},
      std::chrono::seconds(30));
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  ASSERT_EQ(scrape->exit_code, 0) << scrape->output;
  EXPECT_TRUE(
      absl::StrContains(scrape->output, image->resolved.manifest.layers[0].digest.ToString()))
      << scrape->output;
  for (const std::string& name : {std::string("private"), registry_->host()}) {
    EXPECT_FALSE(absl::StrContains(scrape->output, name)) << name << " in\n" << scrape->output;
  }

  // The root as the daemon leaves it: nothing opens for nobody.
  Tree tree = Walk(root);
  std::vector<std::string> everything = tree.files;
  everything.insert(everything.end(), tree.dirs.begin(), tree.dirs.end());
  size_t chunks = 0, blobs = 0;
  for (const std::string& f : tree.files) {
    chunks += absl::StrContains(f, "/cache/chunks/") ? 1 : 0;
    blobs += absl::StartsWith(f, root + "/erofs/blobs/") ? 1 : 0;
  }
  EXPECT_GT(chunks, 0u) << "the reads cached no chunk: this proved little";
  EXPECT_TRUE(absl::c_linear_search(tree.files, root + "/metadata.db"));
  EXPECT_TRUE(absl::c_linear_search(tree.files, root + "/status.json"));
  if (GetParam() == "erofs") {
    EXPECT_EQ(blobs, 1u);
    const std::string blob_dir = root + "/erofs/blobs";
    EXPECT_TRUE(absl::StrContains(SuperOptions(blob_dir), "default_permissions"))
        << SuperOptions(blob_dir);
    for (const std::string& f : tree.files) {
      if (!absl::StartsWith(f, blob_dir + "/")) continue;
      ASSERT_EQ(::stat(f.c_str(), &st), 0) << f;
      EXPECT_EQ(st.st_mode & 07777, 0400u) << f;
    }
  }
  std::map<std::string, OpenResult> got = OpenAsNobody(everything, tmp_.Sub("root-list"));
  for (const std::string& p : everything) {
    EXPECT_EQ(got[p].error, EACCES) << p << " opened by nobody";
  }

  // Loosened: the root and the daemon's own directories 0755 (not the snapshots: those are
  // the containers' data, as in containerd's own snapshotters). The files' modes still hold.
  std::vector<std::string> own_files;
  for (const std::string& dir : tree.dirs) {
    if (absl::StartsWith(dir, root + "/snapshots") || IsMountPoint(dir)) continue;
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0) << dir;
  }
  for (const std::string& f : tree.files) {
    if (!absl::StartsWith(f, root + "/snapshots/")) own_files.push_back(f);
  }
  got = OpenAsNobody(own_files, tmp_.Sub("loose-list"));
  for (const std::string& p : own_files) {
    EXPECT_EQ(got[p].error, EACCES) << p << " opened by nobody under a loosened root";
  }

  // The next start makes the root private again.
  container_.reset();
  ASSERT_TRUE(daemon_->Restart().ok());
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

INSTANTIATE_TEST_SUITE_P(Backends, PrivateDataTest, ::testing::Values("fuse", "erofs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lazypull::testing
