// FUSE passthrough of fully local files (issue 22), on this machine's kernel (6.9+ with
// CONFIG_FUSE_PASSTHROUGH; root): a real eStargz layer mounted with the FUSE backend, reads
// checked byte for byte, and which requests still reach the daemon (an FsOpObserver).
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "fetcher/cache/chunk_cache.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mount/backend.h"
#include "mount/fuse/passthrough_dirs.h"
#include "mount/fuse/passthrough_files.h"
#include "tests/fuse/estargz_test_layer.h"
#include "tests/fuse/file_test_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using ::lazypull::testing::OpCounter;
using ::lazypull::testing::RunCommand;
using ::lazypull::testing::TempDir;
using ::lazypull::testing::WaitUntil;

// What this process's fds point at, sorted ("pipe:[...]" and the like included).
std::multiset<std::string> OpenFds() {
  std::multiset<std::string> out;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    out.insert(fs::read_symlink(e.path(), ec).string());
  }
  return out;
}

// The whole file through one fd (pread until EOF).
std::string ReadFd(int fd) {
  std::string out;
  char buf[1 << 16];
  for (off_t off = 0;;) {
    ssize_t n = pread(fd, buf, sizeof(buf), off);
    EXPECT_GE(n, 0) << strerror(errno);
    if (n <= 0) break;
    out.append(buf, n);
    off += n;
  }
  return out;
}

class FusePassthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string src = tmp_.Sub("src");
    fs::create_directories(src + "/dir");
    for (int i = 0; i < 8; ++i) {
      testing::MustWrite(src + "/dir/f" + std::to_string(i), testing::RandomBytes(5000 + i, i));
    }
    // 3 MiB + 17 bytes in 256 KiB chunks: many chunks, a short last one.
    testing::MustWrite(src + "/big.bin", testing::RandomBytes((3 << 20) + 17, 99));
    testing::MustWrite(src + "/empty", "");
    auto layer = testing::BuildEstargzTestLayer(src, tmp_.path(), 256 << 10);
    ASSERT_TRUE(layer.ok()) << layer.status();
    blob_ = layer->blob;
    index_ = layer->index;
    CacheConfig cc;
    cc.dir = tmp_.Sub("cache");
    auto cache = ChunkCache::Open(cc);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
    fs::create_directories(mnt_);
  }

  void TearDown() override { layer_.reset(); }

  std::unique_ptr<LayerReader> MakeReader() {
    LayerReaderOptions ro;
    ro.prefetch = false;
    ro.background_fetch = false;
    ro.readahead_bytes = 0;  // a read fetches only what it reads: other files stay remote
    ro.readahead_window = 0;
    ro.directory_batch.small_file = 0;
    auto reader = LayerReader::Create("sha256:passthrough", index_, blob_, cache_.get(), ro);
    EXPECT_TRUE(reader.ok()) << reader.status();
    return reader.ok() ? std::move(*reader) : nullptr;
  }

  void Mount(bool passthrough) {
    std::unique_ptr<LayerReader> reader = MakeReader();
    ASSERT_NE(reader, nullptr);
    mount::MountConfig config;
    config.backend = mount::BackendKind::kFuse;
    config.fuse.op_observer = counter_;
    config.fuse.passthrough = passthrough;
    config.fuse.passthrough_dir = tmp_.Sub("pt");
    auto backend = mount::NewLayerMountBackend(config);
    ASSERT_TRUE(backend.ok()) << backend.status();
    auto mounted = (*backend)->Mount({.layer_id = "sha256:passthrough",
                                      .reader = std::move(reader),
                                      .target_dir = mnt_,
                                      .backend = "",
                                      .origin = {}});
    ASSERT_TRUE(mounted.ok()) << mounted.status();
    layer_ = std::move(*mounted);
  }

  // Requests counted since the last call, once a STATFS barrier was answered (see
  // fuse_kernel_cache_test). The daemon counts a request after replying to it, so a request
  // that just returned to this process may still be uncounted: a test that needs it counted
  // waits for it first.
  std::map<std::string, int> Settle() {
    struct statvfs sv;
    EXPECT_EQ(statvfs(mnt_.c_str(), &sv), 0);
    EXPECT_TRUE(WaitUntil([&] { return counter_->Peek()["statfs"] >= 1; }));
    std::map<std::string, int> c = counter_->Take();
    c.erase("statfs");
    return c;
  }

  // Waits until every chunk of `rel` is in the cache (chunks are stored off the read path).
  void WaitStored(const std::string& rel) {
    for (const format::Chunk& ch : index_->Chunks(*index_->LookupPath(rel))) {
      const Digest d = ch.digest_value();
      ASSERT_TRUE(WaitUntil([&] { return cache_->Contains(d); })) << rel;
    }
  }
  // Bytes of the files on disk under the cache and the passthrough state: what a user sees.
  uint64_t DiskBytes() {
    uint64_t total = 0;
    for (const char* dir : {"cache", "pt"}) {
      for (const auto& e : fs::recursive_directory_iterator(tmp_.Sub(dir))) {
        if (e.is_regular_file()) total += e.file_size();
      }
    }
    return total;
  }

  std::string Src(const std::string& rel) { return *testing::ReadAll(tmp_.Sub("src/" + rel)); }
  int OpenRo(const std::string& rel) {
    int fd = open((mnt_ + "/" + rel).c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << rel << ": " << strerror(errno);
    return fd;
  }

  TempDir tmp_{"lazypull-fuse-passthrough"};
  const std::string mnt_ = tmp_.Sub("mnt");
  std::shared_ptr<BlobReader> blob_;
  std::shared_ptr<const format::LayerIndex> index_;
  std::shared_ptr<OpCounter> counter_ = std::make_shared<OpCounter>();
  std::unique_ptr<ChunkCache> cache_;
  std::unique_ptr<mount::MountedLayer> layer_;
};

// A file opened before it is local stays on the daemon's read path (also for opens while
// that one is open: the kernel allows one io mode per inode). The first open once it is
// local does not wait for its copy: it is answered in cached mode and the copy is assembled
// in the background. Once it exists and the inode's cached opens are closed, the next open is
// a passthrough one: exact bytes through read and mmap, and no READ reaches the daemon.
TEST_F(FusePassthroughTest, FileThatBecomesLocalOpensInPassthrough) {
  Mount(true);
  ASSERT_EQ(layer_->Status().passthrough, "on");
  const std::string want = Src("big.bin");
  int first = OpenRo("big.bin");
  ASSERT_EQ(ReadFd(first), want);  // fetches every chunk: now local and verified
  int second = OpenRo("big.bin");  // must join the cached mode of `first`
  ASSERT_EQ(ReadFd(second), want);
  EXPECT_EQ(layer_->Status().passthrough_opens, 0u);
  EXPECT_EQ(layer_->Status().cached_opens, 2u);
  close(first);
  close(second);
  WaitStored("big.bin");
  Settle();

  int deferred = OpenRo("big.bin");  // local, no copy yet: cached, the copy is queued
  ASSERT_GE(deferred, 0);
  EXPECT_EQ(layer_->Status().deferred_opens, 1u);
  EXPECT_EQ(layer_->Status().cached_opens, 3u);
  EXPECT_EQ(layer_->Status().passthrough_opens, 0u);
  EXPECT_EQ(ReadFd(deferred), want);
  ASSERT_TRUE(WaitUntil([&] { return layer_->Status().passthrough_copies == 1; }));
  EXPECT_EQ(layer_->Status().passthrough_copy_bytes, want.size());
  close(deferred);
  Settle();

  int third = OpenRo("big.bin");
  ASSERT_GE(third, 0);
  EXPECT_EQ(layer_->Status().passthrough_opens, 1u);
  EXPECT_EQ(layer_->Status().deferred_opens, 1u);
  EXPECT_EQ(layer_->Status().backing_files, 1u);
  EXPECT_EQ(ReadFd(third), want);
  int fourth = OpenRo("big.bin");  // joins the passthrough mode
  void* map = mmap(nullptr, want.size(), PROT_READ, MAP_PRIVATE, fourth, 0);
  ASSERT_NE(map, MAP_FAILED) << strerror(errno);
  EXPECT_EQ(std::string(static_cast<const char*>(map), want.size()), want);
  munmap(map, want.size());
  // Ops are counted after their reply: wait for both OPENs before taking the counts.
  EXPECT_TRUE(WaitUntil([&] { return counter_->Peek()["open"] >= 2; }));
  std::map<std::string, int> ops = Settle();
  EXPECT_EQ(ops.count("read"), 0u);
  EXPECT_EQ(ops["open"], 2);
  close(third);
  close(fourth);
  // The backing id lives while the inode has open files.
  EXPECT_TRUE(WaitUntil([&] { return layer_->Status().backing_files == 0; }));
  EXPECT_EQ(layer_->Status().passthrough_opens, 2u);
  EXPECT_EQ(layer_->Status().passthrough_copies, 1u);  // kept until unmount
}

// The copy of a multi-chunk file counts against the chunk cache's budget, exactly its bytes,
// from before it is written until it is deleted (unmount); to make room the cache evicts the
// file's own chunks first (the copy replaces them), and what is on disk — chunk files plus
// copies — never exceeds max_bytes. A cached open of the file, whose chunks are gone, reads
// the copy: exact bytes, nothing fetched again.
TEST_F(FusePassthroughTest, CopiesAreChargedToTheCacheBudget) {
  constexpr uint64_t kBudget = 5 << 20;
  cache_.reset();
  CacheConfig cc;
  cc.dir = tmp_.Sub("cache");
  cc.max_bytes = kBudget;
  auto cache = ChunkCache::Open(cc);
  ASSERT_TRUE(cache.ok()) << cache.status();
  cache_ = std::move(*cache);
  Mount(true);
  ASSERT_EQ(layer_->Status().passthrough, "on");
  const std::string want = Src("big.bin");
  ASSERT_EQ(*testing::ReadAll(mnt_ + "/big.bin"), want);
  WaitStored("big.bin");
  EXPECT_EQ(cache_->stats().bytes_stored, want.size());
  EXPECT_EQ(cache_->stats().external_bytes, 0u);
  Settle();

  int held = OpenRo("big.bin");  // deferred: cached mode, copy queued
  ASSERT_GE(held, 0);
  EXPECT_EQ(layer_->Status().deferred_opens, 1u);
  ASSERT_TRUE(WaitUntil([&] { return layer_->Status().passthrough_copies == 1; }));
  ChunkCacheStats s = cache_->stats();
  EXPECT_EQ(s.external_bytes, want.size());
  EXPECT_EQ(s.external_accounts, 1u);
  EXPECT_EQ(layer_->Status().passthrough_copy_bytes, want.size());
  EXPECT_LE(s.bytes_stored + s.external_bytes, kBudget);
  EXPECT_GT(s.evictions, 0u);
  EXPECT_LT(s.bytes_stored, want.size());  // some of big.bin's chunks made room
  EXPECT_LE(DiskBytes(), kBudget);

  // Joins `held`'s cached mode: READs reach the daemon and are answered from the copy.
  const uint64_t fetched = layer_->Status().reader.bytes_fetched;
  int cached = OpenRo("big.bin");
  ASSERT_EQ(posix_fadvise(cached, 0, 0, POSIX_FADV_DONTNEED), 0);
  EXPECT_EQ(ReadFd(cached), want);
  EXPECT_GE(Settle()["read"], 1);
  EXPECT_EQ(layer_->Status().reader.bytes_fetched, fetched);
  EXPECT_EQ(layer_->Status().passthrough_opens, 0u);
  close(cached);
  close(held);
  Settle();
  int pt = OpenRo("big.bin");
  EXPECT_EQ(ReadFd(pt), want);
  EXPECT_EQ(layer_->Status().passthrough_opens, 1u);
  close(pt);
  EXPECT_LE(DiskBytes(), kBudget);

  ASSERT_TRUE(layer_->Unmount().ok());
  EXPECT_EQ(cache_->stats().external_bytes, 0u);
  EXPECT_EQ(cache_->stats().external_accounts, 0u);
  EXPECT_TRUE(fs::is_empty(tmp_.Sub("pt")));
}

// At start the daemon deletes the passthrough state of mounts no one will adopt (a crashed
// daemon's), and keeps that of the mounts the FUSE holder keeps (adopted with it).
TEST_F(FusePassthroughTest, SweepKeepsLiveMountsStateOnly) {
  const std::string root = tmp_.Sub("pt");
  const std::string stale = root + "/00000000deadbeef";
  fs::create_directories(stale + "/files");
  testing::MustWrite(stale + "/files/7", std::string(4096, 'x'));
  testing::MustWrite(stale + "/ledger", "P 7 1\n");
  Mount(true);
  const std::string live = mount::PassthroughStateDir(root, mnt_);
  ASSERT_TRUE(fs::exists(live + "/ledger"));
  EXPECT_EQ(mount::SweepPassthroughDirs(root, {mnt_}), 1u);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live + "/ledger"));
  EXPECT_EQ(mount::SweepPassthroughDirs(root, {mnt_}), 0u);
  EXPECT_EQ(mount::SweepPassthroughDirs(tmp_.Sub("no-such-dir"), {}), 0u);
  EXPECT_EQ(*testing::ReadAll(mnt_ + "/dir/f1"), Src("dir/f1"));  // still serving
}

// A successor adopting a mount keeps the copy of a file its predecessor left open in
// passthrough mode (the kernel may read it through the inherited backing id for good) and
// charges it to the budget; it deletes the other copies and unfinished ones, which it has not
// verified. Its end (a handover) releases the charge and leaves the files.
TEST_F(FusePassthroughTest, AdoptedStateKeepsInheritedCopiesOnly) {
  const format::Ino big = *index_->LookupPath("big.bin");
  const format::Ino f1 = *index_->LookupPath("dir/f1");
  const std::string dir = tmp_.Sub("pt/adopted");
  fs::create_directories(dir + "/files");
  const std::string want = Src("big.bin");
  testing::MustWrite(fmt::format("{}/files/{}", dir, big), want);
  testing::MustWrite(fmt::format("{}/files/{}", dir, f1), Src("dir/f1"));
  testing::MustWrite(fmt::format("{}/files/{}.tmp", dir, f1), "partial");
  testing::MustWrite(dir + "/ledger", fmt::format("P {} 7\nP {} 8\nE {}\n", big, f1, f1));
  std::unique_ptr<LayerReader> reader = MakeReader();
  ASSERT_NE(reader, nullptr);
  {
    auto p = mount::PassthroughFiles::Create(reader.get(), dir, /*adopted=*/true, "adopted");
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ((*p)->Stats().copies, 1u);
    EXPECT_EQ((*p)->Stats().copy_bytes, want.size());
    EXPECT_EQ(cache_->stats().external_bytes, want.size());
    EXPECT_EQ(*testing::ReadAll(fmt::format("{}/files/{}", dir, big)), want);
    EXPECT_FALSE(fs::exists(fmt::format("{}/files/{}", dir, f1)));
    EXPECT_FALSE(fs::exists(fmt::format("{}/files/{}.tmp", dir, f1)));
  }
  EXPECT_EQ(cache_->stats().external_bytes, 0u);
  EXPECT_TRUE(fs::exists(fmt::format("{}/files/{}", dir, big)));
}

// A file stored as one chunk is backed by its chunk-cache file: exact bytes, no READ; empty
// files and files not yet local stay cached.
TEST_F(FusePassthroughTest, SingleChunkFilesAndNotLocalFiles) {
  Mount(true);
  ASSERT_EQ(layer_->Status().passthrough, "on");
  ASSERT_EQ(*testing::ReadAll(mnt_ + "/dir/f1"), Src("dir/f1"));  // cached: fetches it
  ASSERT_EQ(*testing::ReadAll(mnt_ + "/empty"), "");
  EXPECT_EQ(layer_->Status().passthrough_opens, 0u);
  // The fetched chunk is stored off the read path: f1 is local once it is.
  const format::Chunk& f1_chunk = index_->Chunks(*index_->LookupPath("dir/f1")).front();
  const Digest f1_digest = Digest::FromRaw(std::string_view(
      reinterpret_cast<const char*>(f1_chunk.digest.data()), f1_chunk.digest.size()));
  ASSERT_TRUE(WaitUntil([&] { return cache_->Contains(f1_digest); }));
  Settle();
  EXPECT_EQ(*testing::ReadAll(mnt_ + "/dir/f1"), Src("dir/f1"));
  EXPECT_EQ(*testing::ReadAll(mnt_ + "/dir/f2"), Src("dir/f2"));  // not local: cached
  // f2's read only. The daemon counts an op after replying to it, so the READ that answered
  // ReadAll may be counted after Settle's statfs: wait for it rather than race it.
  EXPECT_TRUE(WaitUntil([&] { return counter_->Peek()["read"] >= 1; }));
  Settle();
  EXPECT_EQ(layer_->Status().passthrough_opens, 1u);
  int fd = OpenRo("dir/f1");
  EXPECT_EQ(ReadFd(fd), Src("dir/f1"));
  close(fd);
  EXPECT_EQ(Settle().count("read"), 0u);
}

// `fuse_passthrough = false`: no OPEN round trips beyond the first (ENOSYS), reads through
// the daemon, exact bytes.
TEST_F(FusePassthroughTest, DisabledByConfig) {
  Mount(false);
  EXPECT_EQ(layer_->Status().passthrough, "off");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(*testing::ReadAll(mnt_ + "/big.bin"), Src("big.bin"));
    EXPECT_EQ(*testing::ReadAll(mnt_ + "/dir/f3"), Src("dir/f3"));
  }
  EXPECT_TRUE(WaitUntil([&] { return counter_->Peek()["open"] >= 1; }));  // counted after reply
  std::map<std::string, int> ops = Settle();
  EXPECT_EQ(ops["open"], 1);
  EXPECT_EQ(layer_->Status().passthrough_opens, 0u);
}

// Many opens and closes leave no fd behind in this process, no backing file registered, and
// unmounting removes the mount's passthrough state.
TEST_F(FusePassthroughTest, NoLeaks) {
  Mount(true);
  for (const char* f : {"big.bin", "dir/f4", "dir/f5"}) {
    ASSERT_EQ(*testing::ReadAll(mnt_ + "/" + f), Src(f));  // make them local
  }
  WaitStored("big.bin");
  ASSERT_EQ(*testing::ReadAll(mnt_ + "/big.bin"), Src("big.bin"));  // deferred: queues the copy
  ASSERT_TRUE(WaitUntil([&] { return layer_->Status().passthrough_copies == 1; }));
  WaitStored("dir/f4");
  WaitStored("dir/f5");
  Settle();
  // Chunk-cache files stay open in the cache's own bounded fd cache (ChunkCacheStats::open_fds;
  // the copy's assembly opened some): counted apart. Nothing else may be left open.
  auto without_chunks = [](std::multiset<std::string> fds, size_t* chunk_fds) {
    *chunk_fds = 0;
    for (auto it = fds.begin(); it != fds.end();) {
      if (it->find("/cache/chunks/") != std::string::npos) {
        ++*chunk_fds;
        it = fds.erase(it);
      } else {
        ++it;
      }
    }
    return fds;
  };
  size_t chunk_fds = 0;
  const std::multiset<std::string> before = without_chunks(OpenFds(), &chunk_fds);
  for (int round = 0; round < 20; ++round) {
    for (const char* f : {"big.bin", "dir/f4", "dir/f5"}) {
      ASSERT_EQ(*testing::ReadAll(mnt_ + "/" + f), Src(f));
    }
  }
  Settle();
  EXPECT_EQ(layer_->Status().passthrough_opens, 60u);
  EXPECT_TRUE(WaitUntil([&] { return layer_->Status().backing_files == 0; }));
  const std::multiset<std::string> after = without_chunks(OpenFds(), &chunk_fds);
  EXPECT_EQ(chunk_fds, cache_->stats().open_fds);
  EXPECT_THAT(after, ::testing::ContainerEq(before));
  ASSERT_TRUE(fs::exists(tmp_.Sub("pt")));
  ASSERT_TRUE(layer_->Unmount().ok());
  EXPECT_TRUE(fs::is_empty(tmp_.Sub("pt")));
  EXPECT_EQ(cache_->stats().external_bytes, 0u);
}

}  // namespace
}  // namespace lazypull
