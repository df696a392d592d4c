// The EROFS backend with real mounts (root): lazy layers through the kernel's EROFS and the blob
// FUSE file system (exact trees, laziness, integrity, timeouts), graduation to a local copy of
// the original tar (exact tree with the registry and the chunk cache gone, diff_id mismatch
// stays lazy), mounting a graduated layer after a "restart" without index or reader, and the
// runtime backend choice (probe failure → FUSE for auto, a clear error for erofs).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "absl/strings/str_join.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/layer_decompressor.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "gtest/gtest.h"
#include "mount/backend.h"
#include "mount/erofs/kernel_mount.h"
#include "tests/erofs/erofs_test_util.h"
#include "tests/fuse/fault_blob_reader.h"
#include "tests/harness/test_env.h"

namespace lazypull::erofs_testing {
namespace {

using mount::LayerMountBackend;
using mount::LayerMountRequest;
using mount::MountedLayer;
using testing::FaultBlobReader;
using testing::TempDir;

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      absl::Status s = absl::ErrnoToStatus(errno, path);
      close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, n);
  }
  close(fd);
  return out;
}

// Graduation reads a whole layer: allow a minute.
bool WaitFor(const std::function<bool()>& condition) {
  return testing::WaitUntil(condition, std::chrono::seconds(60));
}

class ErofsBackendTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    auto layer = MakeTestLayer(RichEntries(), GetParam());
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = std::move(*layer);
    fault_ = std::make_shared<FaultBlobReader>(NewStringBlobReader(layer_.built.blob));
    OpenCache();
    config_.backend = mount::BackendKind::kErofs;
    config_.erofs.dir = tmp_.Sub("erofs");
    config_.erofs.graduation_check = std::chrono::milliseconds(100);
    auto backend = mount::NewLayerMountBackend(config_);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    ASSERT_EQ(backend_->name(), "erofs");
  }
  void TearDown() override {
    mounted_.clear();
    backend_.reset();
  }

  void OpenCache() {
    CacheConfig cc;
    cc.dir = tmp_.Sub("cache");
    auto cache = ChunkCache::Open(cc);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
  }

  std::shared_ptr<LayerReader> NewReader(bool background) {
    LayerReaderOptions o;
    o.fetch_timeout = std::chrono::milliseconds(1500);
    o.background_fetch = background;
    o.background_silence = std::chrono::milliseconds(0);
    o.readahead_window = 0;  // only what is read (cross-file readahead has its own tests)
    auto r = LayerReader::Create("sha256:" + std::string(64, GetParam() ? 'b' : 'a'), layer_.index,
                                 fault_, cache_.get(), o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }

  // The layer's real diff_id: sha256 of the decompressed blob (eStargz: with its TOC entry).
  std::string DecompressedBlob() {
    std::string out;
    auto sink = convert::NewStringBlobSink(&out);
    auto blob = NewStringBlobReader(layer_.built.blob);
    auto compression = convert::SniffCompression(*blob);
    EXPECT_TRUE(compression.ok());
    EXPECT_TRUE(convert::DecompressLayer(*blob, *compression, *sink, "test").ok());
    return out;
  }

  mount::LayerOrigin Origin(const std::string& tar_for_diff_id) {
    mount::LayerOrigin origin;
    Digest diff_id = Digest::Of(tar_for_diff_id);
    origin.diff_id = [diff_id]() -> absl::StatusOr<Digest> { return diff_id; };
    std::string blob = layer_.built.blob;
    origin.fetch_blob = [blob, this](const std::string& path, const std::function<bool()>&) {
      ++blob_downloads_;
      return testing::WriteFile(path, blob);
    };
    origin.blob = fault_;
    return origin;
  }

  MountedLayer* MountAt(const std::string& name, std::shared_ptr<LayerReader> reader,
                        mount::LayerOrigin origin = {}) {
    std::string dir = tmp_.Sub(name);
    std::filesystem::create_directories(dir);
    LayerMountRequest req{.layer_id = reader->layer_id(),
                          .reader = reader,
                          .target_dir = dir,
                          .origin = std::move(origin)};
    auto m = backend_->Mount(req);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return nullptr;
    mounted_.push_back(std::move(*m));
    return mounted_.back().get();
  }

  TempDir tmp_{"erofsbk"};
  TestLayer layer_;
  std::shared_ptr<FaultBlobReader> fault_;
  std::unique_ptr<ChunkCache> cache_;
  mount::MountConfig config_;
  std::unique_ptr<LayerMountBackend> backend_;
  std::vector<std::unique_ptr<MountedLayer>> mounted_;
  std::atomic<int> blob_downloads_{0};
};

TEST_P(ErofsBackendTest, LazyMountServesTheExactTreeAndFetchesOnlyWhatIsRead) {
  auto reader = NewReader(/*background=*/false);
  MountedLayer* m = MountAt("lazy", reader);
  ASSERT_NE(m, nullptr);
  EXPECT_TRUE(mount::erofs::IsMountOfType(m->target(), "erofs"));
  EXPECT_TRUE(mount::erofs::IsMountOfType(config_.erofs.dir + "/blobs", "fuse.lazypull"));
  // Metadata never needs the blob: a full walk with stat and xattrs fetches nothing.
  for (const auto& e : std::filesystem::recursive_directory_iterator(m->target())) {
    struct stat st;
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
  }
  EXPECT_EQ(fault_->requests(), 0u);
  // One file read: only its chunks are fetched.
  auto hello = ReadAll(m->target() + "/etc/hello");
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(*hello, "hello from erofs\n");
  EXPECT_GT(fault_->requests(), 0u);
  EXPECT_LT(fault_->bytes(), layer_.built.blob.size() / 4);
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  mount::LayerMountStatus st = m->Status();
  EXPECT_EQ(st.backend, "erofs");
  EXPECT_FALSE(st.graduated);
  EXPECT_TRUE(st.mounted);
  EXPECT_GT(st.reader.bytes_fetched, 0u);
  nlohmann::json j = st.ToJson();
  EXPECT_EQ(j["backend"], "erofs");
  EXPECT_EQ(j["graduated"], false);
  ASSERT_TRUE(m->Unmount().ok());
  EXPECT_FALSE(mount::erofs::IsMountOfType(m->target(), "erofs"));
}

TEST_P(ErofsBackendTest, CorruptChunkIsEioAndNeverCached) {
  auto reader = NewReader(false);
  MountedLayer* m = MountAt("corrupt", reader);
  ASSERT_NE(m, nullptr);
  const format::Ino ino = *layer_.index->LookupPath("bin-data");
  const format::Chunk& first = layer_.index->Chunks(ino)[0];
  fault_->CorruptByte(first.compressed_offset + first.compressed_length / 2);
  auto bad = ReadAll(m->target() + "/bin-data");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Input/output error"), std::string::npos) << bad.status();
  fault_->CorruptByte(std::nullopt);
  auto good = ReadAll(m->target() + "/bin-data");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(*good == *FileContent(layer_, ino));
}

TEST_P(ErofsBackendTest, StalledRegistryIsEioAfterTheFetchTimeout) {
  auto reader = NewReader(false);
  MountedLayer* m = MountAt("stalled", reader);
  ASSERT_NE(m, nullptr);
  fault_->SetBlocked(true);
  auto start = std::chrono::steady_clock::now();
  auto r = ReadAll(m->target() + "/owned");
  auto elapsed = std::chrono::steady_clock::now() - start;
  fault_->SetBlocked(false);
  EXPECT_FALSE(r.ok());
  EXPECT_LT(elapsed, std::chrono::seconds(10));
  auto again = ReadAll(m->target() + "/owned");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "uid and gid above 65535\n");
}

// Graduation: once the background fetch made the layer local, the backend builds the local
// copy (original tar, verified) and switches the mount in place. From then on the tree reads
// exactly with the registry failing and the chunk cache deleted: no FUSE, no cache.
TEST_P(ErofsBackendTest, GraduatesToTheOriginalTarAndNeedsNothingElse) {
  auto reader = NewReader(/*background=*/true);
  const std::string original_tar = DecompressedBlob();
  MountedLayer* m = MountAt("grad", reader, Origin(original_tar));
  ASSERT_NE(m, nullptr);
  // A container that opened a file on the lazy mount keeps it across the switch.
  int old_fd = open((m->target() + "/etc/hello").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(old_fd, 0);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().reader.background == "done"; }));
  const uint64_t fetched_before = fault_->bytes();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduated; })) << m->Status().ToJson().dump();
  // zstd:chunked is rebuilt from the local chunks plus its small header frames; eStargz is
  // downloaded once more.
  EXPECT_EQ(blob_downloads_, GetParam() ? 0 : 1);
  if (GetParam()) {
    EXPECT_LT(fault_->bytes() - fetched_before, layer_.built.blob.size() / 4)
        << "the rebuild fetched too much";
  }
  EXPECT_TRUE(mount::erofs::IsMountOfType(m->target(), "erofs"));
  char buf[64];
  EXPECT_EQ(pread(old_fd, buf, sizeof(buf), 0), 17);
  close(old_fd);
  fault_->SetFailing(true);
  cache_.reset();
  std::filesystem::remove_all(tmp_.Sub("cache"));
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  const std::string local = config_.erofs.dir + "/graduated/" + reader->layer_id().substr(0, 6) +
                            "-" + reader->layer_id().substr(7);
  auto tar = testing::ReadFile(local + "/layer.tar");
  ASSERT_TRUE(tar.ok()) << tar.status();
  EXPECT_TRUE(*tar == original_tar) << "the local copy is not the original tar";
  mounted_.clear();  // unmount before the reader's cache is gone for good
  OpenCache();

  // A "restarted" daemon: a fresh backend mounts the local copy with no reader at all.
  auto fresh = mount::NewLayerMountBackend(config_);
  ASSERT_TRUE(fresh.ok());
  std::filesystem::create_directories(tmp_.Sub("after-restart"));
  auto local_mount = (*fresh)->MountLocal(reader->layer_id(), tmp_.Sub("after-restart"), "");
  ASSERT_TRUE(local_mount.ok()) << local_mount.status();
  EXPECT_TRUE((*local_mount)->Status().graduated);
  diffs = CompareMountWithIndex(tmp_.Sub("after-restart"), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  EXPECT_EQ((*fresh)
                ->MountLocal("sha256:" + std::string(64, 'c'), tmp_.Sub("after-restart"), "")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  local_mount->reset();
  (*fresh)->DropLocal(reader->layer_id());
  EXPECT_FALSE(std::filesystem::exists(local));
}

TEST_P(ErofsBackendTest, DiffIdMismatchKeepsTheLayerLazy) {
  auto reader = NewReader(/*background=*/true);
  MountedLayer* m = MountAt("mismatch", reader, Origin("not the layer"));
  ASSERT_NE(m, nullptr);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return blob_downloads_ == 1; }));
  ASSERT_TRUE(WaitFor([&] {
    return !std::filesystem::exists(config_.erofs.dir + "/graduated") ||
           std::filesystem::is_empty(config_.erofs.dir + "/graduated");
  }));
  // Nothing to wait for: what is tested is that nothing happens during five more checks.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(m->Status().graduated);
  EXPECT_EQ(blob_downloads_, 1) << "a failed graduation is not retried at once";
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

INSTANTIATE_TEST_SUITE_P(Formats, ErofsBackendTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "ZstdChunked" : "Estargz");
});

TEST(BackendChoice, AutoFallsBackToFuseWhenTheProbeFails) {
  TempDir tmp("erofschoice");
  mount::MountConfig config;
  config.erofs.dir = tmp.Sub("erofs");
  auto failing = [](const mount::MountConfig&) {
    return absl::FailedPreconditionError("EROFS is not usable here: simulated");
  };
  config.backend = mount::BackendKind::kAuto;
  auto b = mount::NewLayerMountBackend(config, failing);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->name(), "fuse");
  config.backend = mount::BackendKind::kErofs;
  auto e = mount::NewLayerMountBackend(config, failing);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(e.status().message().find("simulated"), std::string::npos) << e.status();
  // The real probe passes on this kernel; a filesystems list without erofs fails it.
  config.backend = mount::BackendKind::kAuto;
  auto real = mount::NewLayerMountBackend(config);
  ASSERT_TRUE(real.ok()) << real.status();
  EXPECT_EQ((*real)->name(), "erofs");
  ASSERT_TRUE(testing::WriteFile(tmp.Sub("filesystems"), "nodev\tfuse\n\text4\n").ok());
  config.erofs.probe_filesystems = tmp.Sub("filesystems");
  auto none = mount::NewLayerMountBackend(config);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ((*none)->name(), "fuse");
}

}  // namespace
}  // namespace lazypull::erofs_testing
