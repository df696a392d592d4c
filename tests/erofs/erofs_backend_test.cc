// The EROFS backend with real mounts (root): lazy layers through the kernel's EROFS and the blob
// FUSE file system (exact trees, laziness, integrity, timeouts), graduation to a local copy
// built from the local chunks (exact tree with the registry failing and the chunks released,
// nothing downloaded again, root-only files, bounded memory for a 100 GiB sparse file, failed
// and throwing jobs, a release during a graduation, unused copies deleted at start), mounting
// a graduated layer after a "restart" without index or reader, and the runtime backend choice
// (probe failure → FUSE for auto, a clear error for erofs). Every backend test runs with images
// file-backed and through loop devices (erofs_attach = "loop"), counting loop devices: none
// outlives the backend; and on kernels without 512-byte blocks or MOVE_MOUNT_BENEATH (the real
// probe's findings masked): blob-layout copies, lazy mounts that stay lazy and read the copy.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
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

// Parameters: zstd:chunked (else eStargz), loop devices (else file-backed).
class ErofsBackendTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {
 protected:
  bool zstd() const { return std::get<0>(GetParam()); }
  bool loop() const { return std::get<1>(GetParam()); }

  void SetUp() override {
    auto layer = MakeTestLayer(RichEntries(), zstd());
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = std::move(*layer);
    fault_ = std::make_shared<FaultBlobReader>(NewStringBlobReader(layer_.built.blob));
    OpenCache();
    config_.backend = mount::BackendKind::kErofs;
    config_.erofs.dir = tmp_.Sub("erofs");
    config_.erofs.graduation_check = std::chrono::milliseconds(100);
    config_.erofs.attach = loop() ? mount::ErofsAttach::kLoop : mount::ErofsAttach::kFile;
    NewBackend();
  }
  void TearDown() override {
    mounted_.clear();
    backend_.reset();
    // A loop device goes when the kernel lets go of its mount: at once, or once I/O still in
    // flight (a read the stalled registry held) has failed.
    const std::string owner = mount::erofs::LoopOwnerTag(config_.erofs.dir);
    EXPECT_TRUE(WaitFor([&] {
      return OwnedLoopDevices(owner) == 0 && LoopDevicesBackedUnder(tmp_.path()) == 0;
    })) << "a loop device outlived its mount: "
        << OwnedLoopDevices(owner);
  }

  // (Re)creates the backend; `mask` edits what the real probe found (a kernel without
  // something this one has).
  void NewBackend(std::function<void(mount::erofs::ErofsSupport&)> mask = nullptr) {
    mounted_.clear();
    backend_.reset();
    mount::ErofsProbe probe = nullptr;
    if (mask) {
      probe = [mask](const mount::MountConfig& c) -> absl::StatusOr<mount::erofs::ErofsSupport> {
        auto found = mount::erofs::ProbeErofs(c.erofs);
        if (found.ok()) mask(*found);
        return found;
      };
    }
    auto backend = mount::NewLayerMountBackend(config_, probe);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    ASSERT_EQ(backend_->name(), "erofs");
    EXPECT_EQ(backend_->Describe()["erofs_attach"], loop() ? "loop" : "file")
        << backend_->Describe().dump();
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
    auto r = LayerReader::Create("sha256:" + std::string(64, zstd() ? 'b' : 'a'), layer_.index,
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
    origin.diff_id = [diff_id, this]() -> absl::StatusOr<Digest> {
      ++diff_id_calls_;
      return diff_id;
    };
    origin.blob = fault_;
    origin.cache = cache_.get();
    return origin;
  }

  // <erofs dir>/graduated/<layer id with '-' for ':'>
  std::string CopyDir(const std::string& layer_id) const {
    return config_.erofs.dir + "/graduated/" + layer_id.substr(0, 6) + "-" + layer_id.substr(7);
  }
  size_t GraduatedEntries() const {
    std::error_code ec;
    size_t n = 0;
    for (auto it = std::filesystem::directory_iterator(config_.erofs.dir + "/graduated", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++n;
    }
    return n;
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
  std::atomic<int> diff_id_calls_{0};
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
  EXPECT_EQ(st.attach, loop() ? "loop" : "file");
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
// copy from the verified local chunks (eStargz: the lazy blob layout, nothing downloaded;
// zstd:chunked: the original tar, only its header frames fetched), switches the mount in
// place and releases the chunks from the cache (the layer is stored once). From then on the
// tree reads exactly with the registry failing and no chunk in the cache: no FUSE, no cache.
TEST_P(ErofsBackendTest, GraduatesFromLocalChunksAndNeedsNothingElse) {
  auto reader = NewReader(/*background=*/true);
  const std::string original_tar = DecompressedBlob();
  MountedLayer* m = MountAt("grad", reader, Origin(original_tar));
  ASSERT_NE(m, nullptr);
  // A container that opened files on the lazy mount keeps them across the switch; bytes it
  // never read come from the local copy once the chunks are released.
  int old_fd = open((m->target() + "/etc/hello").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(old_fd, 0);
  int unread_fd = open((m->target() + "/bin-data").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(unread_fd, 0);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().reader.background == "done"; }));
  const uint64_t fetched_before = fault_->bytes();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduated; })) << m->Status().ToJson().dump();
  EXPECT_EQ(m->Status().graduation, "done");
  ASSERT_TRUE(WaitFor([&] { return cache_->stats().bytes_stored == 0; }))
      << "the graduated layer's chunks stay in the cache: " << cache_->stats().bytes_stored;
  EXPECT_GT(cache_->stats().external_bytes, 0u) << "the copy does not count in the budget";
  const std::string local = CopyDir(reader->layer_id());
  if (zstd()) {
    // zstd:chunked: the original tar, rebuilt with only its header frames fetched.
    EXPECT_LT(fault_->bytes() - fetched_before, layer_.built.blob.size() / 4)
        << "the rebuild fetched too much";
    EXPECT_EQ(diff_id_calls_, 1);
    auto tar = testing::ReadFile(local + "/layer.tar");
    ASSERT_TRUE(tar.ok()) << tar.status();
    EXPECT_TRUE(*tar == original_tar) << "the local copy is not the original tar";
  } else {
    // eStargz: not one byte more from the registry.
    EXPECT_EQ(fault_->bytes(), fetched_before);
    EXPECT_TRUE(std::filesystem::exists(local + "/layer.blob"));
    EXPECT_FALSE(std::filesystem::exists(local + "/layer.tar"));
  }
  // Root only: the dir 0700, its files 0400.
  struct stat st;
  ASSERT_EQ(stat(local.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  for (const auto& e : std::filesystem::directory_iterator(local)) {
    ASSERT_EQ(stat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0400u) << e.path();
  }
  EXPECT_TRUE(mount::erofs::IsMountOfType(m->target(), "erofs"));
  fault_->SetFailing(true);
  char buf[64];
  EXPECT_EQ(pread(old_fd, buf, sizeof(buf), 0), 17);
  close(old_fd);
  {
    const format::Ino ino = *layer_.index->LookupPath("bin-data");
    std::string got(300 << 10, '\0');
    ssize_t n = pread(unread_fd, got.data(), got.size(), 0);
    close(unread_fd);
    ASSERT_GT(n, 0) << strerror(errno);
    got.resize(static_cast<size_t>(n));
    EXPECT_TRUE(got == *FileContent(layer_, ino)) << "the old lazy mount read wrong bytes";
  }
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  // The backend (its graduation thread) goes before the cache it releases chunks from.
  mounted_.clear();
  backend_.reset();
  cache_.reset();
  OpenCache();

  // A "restarted" daemon: a fresh backend mounts the local copy with no reader at all.
  auto fresh = mount::NewLayerMountBackend(config_);
  ASSERT_TRUE(fresh.ok());
  std::filesystem::create_directories(tmp_.Sub("after-restart"));
  auto local_mount = (*fresh)->MountLocal(reader->layer_id(), tmp_.Sub("after-restart"), "", 0);
  ASSERT_TRUE(local_mount.ok()) << local_mount.status();
  EXPECT_TRUE((*local_mount)->Status().graduated);
  diffs = CompareMountWithIndex(tmp_.Sub("after-restart"), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  EXPECT_EQ((*fresh)
                ->MountLocal("sha256:" + std::string(64, 'c'), tmp_.Sub("after-restart"), "", 0)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_GT((*fresh)->LocalBytes(), 0u);
  local_mount->reset();
  // At start, copies a snapshot still uses stay; the others go.
  (*fresh)->DropLocalExcept({reader->layer_id()});
  EXPECT_TRUE(std::filesystem::exists(local));
  (*fresh)->DropLocalExcept({"sha256:" + std::string(64, 'c')});
  EXPECT_FALSE(std::filesystem::exists(local));
  EXPECT_EQ((*fresh)->LocalBytes(), 0u);
  (*fresh)->DropLocal(reader->layer_id());
  EXPECT_FALSE(std::filesystem::exists(local));
}

// A layer whose graduation failed twice (recorded on disk by an earlier daemon) is not tried
// again: it stays lazy and serves the exact tree.
TEST_P(ErofsBackendTest, AGraduationThatFailedTwiceIsNotRetried) {
  auto reader = NewReader(/*background=*/true);
  std::filesystem::create_directories(config_.erofs.dir + "/graduated");
  const std::string marker = config_.erofs.dir + "/graduated/.failures-" +
                             reader->layer_id().substr(0, 6) + "-" + reader->layer_id().substr(7);
  ASSERT_TRUE(testing::WriteFile(marker, "2\n").ok());
  MountedLayer* m = MountAt("failed-twice", reader, Origin(DecompressedBlob()));
  ASSERT_NE(m, nullptr);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduation == "failed"; }))
      << m->Status().ToJson().dump();
  EXPECT_FALSE(m->Status().graduated);
  EXPECT_EQ(diff_id_calls_, 0);
  EXPECT_FALSE(std::filesystem::exists(CopyDir(reader->layer_id())));
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

// A kernel without MOVE_MOUNT_BENEATH (before 6.5; the probe's finding masked): a lazy mount
// whose layer graduates is not replaced, it stays lazy, but its blob file reads the local copy,
// so the layer's chunks still leave the cache and it reads exactly with the registry failing;
// a new mount of the layer mounts the copy itself.
TEST_P(ErofsBackendTest, WithoutMountBeneathLazyMountsStayAndNewMountsUseTheCopy) {
  NewBackend([](mount::erofs::ErofsSupport& s) { s.mount_beneath = false; });
  EXPECT_EQ(backend_->Describe()["mount_beneath"], false);
  auto reader = NewReader(/*background=*/true);
  MountedLayer* m = MountAt("stays-lazy", reader, Origin(DecompressedBlob()));
  ASSERT_NE(m, nullptr);
  struct stat before;
  ASSERT_EQ(stat(m->target().c_str(), &before), 0);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduation == "done"; }))
      << m->Status().ToJson().dump();
  EXPECT_FALSE(m->Status().graduated) << "no mount is switched without MOVE_MOUNT_BENEATH";
  EXPECT_TRUE(std::filesystem::exists(CopyDir(reader->layer_id())));
  ASSERT_TRUE(WaitFor([&] { return cache_->stats().bytes_stored == 0; }))
      << "the graduated layer's chunks stay in the cache: " << cache_->stats().bytes_stored;
  struct stat after;
  ASSERT_EQ(stat(m->target().c_str(), &after), 0);
  EXPECT_EQ(before.st_dev, after.st_dev) << "the lazy mount was replaced";
  fault_->SetFailing(true);
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  MountedLayer* fresh = MountAt("new-mount", NewReader(/*background=*/false));
  ASSERT_NE(fresh, nullptr);
  EXPECT_TRUE(fresh->Status().graduated);
  diffs = CompareMountWithIndex(fresh->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

// A kernel that mounts no image with 512-byte blocks (the probe's finding masked): a layer
// graduates in the blob layout (4 KiB blocks), zstd:chunked too (no tar copy, no diff_id
// asked), and reads exactly from it.
TEST_P(ErofsBackendTest, WithoutSmallBlocksCopiesUseTheBlobLayout) {
  NewBackend([](mount::erofs::ErofsSupport& s) { s.small_blocks = false; });
  EXPECT_EQ(backend_->Describe()["small_blocks"], false);
  auto reader = NewReader(/*background=*/true);
  MountedLayer* m = MountAt("blocks", reader, Origin(DecompressedBlob()));
  ASSERT_NE(m, nullptr);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduated; })) << m->Status().ToJson().dump();
  const std::string local = CopyDir(reader->layer_id());
  EXPECT_TRUE(std::filesystem::exists(local + "/layer.blob"));
  EXPECT_FALSE(std::filesystem::exists(local + "/layer.tar"));
  EXPECT_EQ(diff_id_calls_, 0);
  ASSERT_TRUE(WaitFor([&] { return cache_->stats().bytes_stored == 0; }));
  fault_->SetFailing(true);
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

// zstd:chunked only: what the origin's diff_id does during a graduation (eStargz graduation
// calls nothing of the origin).
class ErofsZstdGraduationTest : public ErofsBackendTest {};

// An exception thrown inside a graduation job (here by the origin, as a registry client could)
// is a failed job: logged, counted on disk, the layer stays lazy, the daemon lives on.
TEST_P(ErofsZstdGraduationTest, AnExceptionInAGraduationJobIsAFailedJob) {
  auto reader = NewReader(/*background=*/true);
  mount::LayerOrigin origin = Origin(DecompressedBlob());
  origin.diff_id = [this]() -> absl::StatusOr<Digest> {
    ++diff_id_calls_;
    throw std::bad_alloc();
  };
  MountedLayer* m = MountAt("throws", reader, origin);
  ASSERT_NE(m, nullptr);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduation == "failed"; }))
      << m->Status().ToJson().dump();
  EXPECT_EQ(diff_id_calls_, 1);
  EXPECT_FALSE(m->Status().graduated);
  auto marker =
      testing::ReadFile(config_.erofs.dir + "/graduated/.failures-" +
                        reader->layer_id().substr(0, 6) + "-" + reader->layer_id().substr(7));
  ASSERT_TRUE(marker.ok()) << marker.status();
  EXPECT_EQ(*marker, "1\n");
  EXPECT_EQ(GraduatedEntries(), 1u) << "only the failure count; no copy, no temp dir";
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

// The layer is released (its last snapshot removed: unmount + DropLocal, as the remote layer
// manager does) while its graduation runs: held at a gate in the origin, so the release
// certainly comes first. The graduation must not publish its copy: nothing remains.
TEST_P(ErofsZstdGraduationTest, ReleasingALayerWhileItGraduatesLeavesNoCopy) {
  struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool entered = false;
    bool open = false;
  };
  auto gate = std::make_shared<Gate>();
  auto open_gate = [gate] {
    std::lock_guard<std::mutex> lock(gate->mu);
    gate->open = true;
    gate->cv.notify_all();
  };
  struct OpenAtExit {
    std::function<void()> f;
    ~OpenAtExit() { f(); }
  } open_at_exit{open_gate};
  auto reader = NewReader(/*background=*/true);
  mount::LayerOrigin origin = Origin(DecompressedBlob());
  Digest diff_id = Digest::Of(DecompressedBlob());
  origin.diff_id = [gate, diff_id]() -> absl::StatusOr<Digest> {
    std::unique_lock<std::mutex> lock(gate->mu);
    gate->entered = true;
    gate->cv.notify_all();
    gate->cv.wait(lock, [&] { return gate->open; });
    return diff_id;
  };
  MountedLayer* m = MountAt("released", reader, origin);
  ASSERT_NE(m, nullptr);
  m->StartBackground();
  {
    std::unique_lock<std::mutex> lock(gate->mu);
    ASSERT_TRUE(gate->cv.wait_for(lock, std::chrono::seconds(60), [&] { return gate->entered; }));
  }
  EXPECT_EQ(m->Status().graduation, "running");
  ASSERT_TRUE(m->Unmount().ok());
  backend_->DropLocal(reader->layer_id());
  open_gate();
  // The job's temp dir goes once it has given up; then nothing is left at all.
  ASSERT_TRUE(WaitFor([&] { return GraduatedEntries() == 0; }))
      << "a copy or temp dir remains after the release";
  EXPECT_FALSE(std::filesystem::exists(CopyDir(reader->layer_id())));
  EXPECT_EQ(backend_->LocalBytes(), 0u);
}

// A rebuilt tar that does not hash to the diff_id is not kept; the layer graduates in its blob
// layout instead (checked chunk by chunk), with nothing downloaded.
TEST_P(ErofsZstdGraduationTest, DiffIdMismatchGraduatesInTheBlobLayout) {
  auto reader = NewReader(/*background=*/true);
  MountedLayer* m = MountAt("mismatch", reader, Origin("not the layer"));
  ASSERT_NE(m, nullptr);
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduated; })) << m->Status().ToJson().dump();
  EXPECT_EQ(diff_id_calls_, 1);
  const std::string local = CopyDir(reader->layer_id());
  EXPECT_TRUE(std::filesystem::exists(local + "/layer.blob"));
  EXPECT_FALSE(std::filesystem::exists(local + "/layer.tar"));
  fault_->SetFailing(true);
  ASSERT_TRUE(WaitFor([&] { return cache_->stats().bytes_stored == 0; }));
  std::vector<std::string> diffs = CompareMountWithIndex(m->target(), layer_);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  mounted_.clear();
  backend_.reset();
}

// The crash: a zstd:chunked layer with a 100 GiB sparse file (one "zeros" chunk, like
// /var/log/lastlog) mounts, graduates with this process's peak memory growing by less than
// 64 MB, reads back exactly, and its copy takes kilobytes of disk.
TEST_P(ErofsZstdGraduationTest, AHundredGiBSparseFileGraduatesInBoundedMemory) {
  constexpr uint64_t kHole = 100ull << 30;
  auto sparse = MakeSparseZstdChunkedLayer(kHole);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  layer_ = sparse->layer;
  fault_ = std::make_shared<FaultBlobReader>(NewStringBlobReader(layer_.built.blob));
  auto reader = NewReader(/*background=*/true);
  MountedLayer* m = MountAt("sparse", reader, Origin("the tar is not hashed: holes > 1 GiB"));
  ASSERT_NE(m, nullptr);
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM
  auto status_kb = [](const std::string& field) -> uint64_t {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1));
    }
    return 0;
  };
  const uint64_t rss_before = status_kb("VmRSS");
  m->StartBackground();
  ASSERT_TRUE(WaitFor([&] { return m->Status().graduated; })) << m->Status().ToJson().dump();
  const uint64_t growth_kb = status_kb("VmHWM") - rss_before;
  EXPECT_LT(growth_kb, 64u << 10) << "peak memory grew by " << growth_kb << " kB";
  RecordProperty("peak_rss_growth_kb", std::to_string(growth_kb));
  std::printf("peak RSS growth during graduation: %llu kB\n",
              static_cast<unsigned long long>(growth_kb));
  EXPECT_EQ(diff_id_calls_, 0) << "a tar with 100 GiB of holes is not rebuilt and hashed";
  const std::string local = CopyDir(reader->layer_id());
  struct stat st;
  ASSERT_EQ(stat((local + "/layer.blob").c_str(), &st), 0);
  // EROFS chunks entirely in holes are null: they are not even in the blob layout; the two
  // chunks around the data hold zeros as file holes.
  EXPECT_LE(static_cast<uint64_t>(st.st_size), 64u << 20);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 4u << 20);
  fault_->SetFailing(true);
  const std::string path = m->target() + "/var/log/lastlog";
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), sparse->file_size);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto read_at = [&](uint64_t offset, size_t n) {
    std::string out(n, '\x55');
    ssize_t got = pread(fd, out.data(), n, static_cast<off_t>(offset));
    out.resize(got < 0 ? 0 : static_cast<size_t>(got));
    return out;
  };
  const uint64_t part = sparse->head.size();
  EXPECT_TRUE(read_at(0, part) == sparse->head);
  EXPECT_EQ(read_at(part, 4096), std::string(4096, '\0'));
  EXPECT_EQ(read_at(50ull << 30, 4096), std::string(4096, '\0'));
  EXPECT_EQ(read_at(part + kHole - 4096, 4096), std::string(4096, '\0'));
  EXPECT_TRUE(read_at(part + kHole, part) == sparse->tail);
  EXPECT_EQ(read_at(sparse->file_size, 10), "");
  close(fd);
  auto hello = ReadAll(m->target() + "/etc/hello");
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(*hello, "hello\n");
  mounted_.clear();
  backend_.reset();
}

std::string ParamName(const ::testing::TestParamInfo<std::tuple<bool, bool>>& info) {
  return std::string(std::get<0>(info.param) ? "ZstdChunked" : "Estargz") +
         (std::get<1>(info.param) ? "Loop" : "File");
}
INSTANTIATE_TEST_SUITE_P(FormatsAttachments, ErofsBackendTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()), ParamName);
INSTANTIATE_TEST_SUITE_P(FormatsAttachments, ErofsZstdGraduationTest,
                         ::testing::Combine(::testing::Values(true), ::testing::Bool()), ParamName);

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
  // "auto" takes file-backed mounts where they work (they do here); "loop" forces loop devices.
  EXPECT_EQ((*real)->Describe()["erofs_attach"], "file") << (*real)->Describe().dump();
  EXPECT_EQ((*real)->Describe()["mount_beneath"], true);
  EXPECT_EQ((*real)->Describe()["small_blocks"], true);
  config.erofs.attach = mount::ErofsAttach::kLoop;
  auto loop = mount::NewLayerMountBackend(config);
  ASSERT_TRUE(loop.ok()) << loop.status();
  EXPECT_EQ((*loop)->Describe()["erofs_attach"], "loop") << (*loop)->Describe().dump();
  EXPECT_EQ((*loop)->Describe()["mount_beneath"], true);
  config.erofs.attach = mount::ErofsAttach::kAuto;
  ASSERT_TRUE(testing::WriteFile(tmp.Sub("filesystems"), "nodev\tfuse\n\text4\n").ok());
  config.erofs.probe_filesystems = tmp.Sub("filesystems");
  auto none = mount::NewLayerMountBackend(config);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ((*none)->name(), "fuse");
}

}  // namespace
}  // namespace lazypull::erofs_testing
