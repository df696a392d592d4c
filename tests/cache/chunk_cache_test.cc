#include "fetcher/cache/chunk_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/fault_cache_fs.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::FaultCacheFs;
using ::lazypull::testing::PatternBytes;
using ::lazypull::testing::TempDir;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// Regular files below `dir`, as paths relative to it, sorted.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

CacheConfig Config(const std::string& dir, uint64_t max_bytes = uint64_t{1} << 30) {
  CacheConfig c;
  c.dir = dir;
  c.max_bytes = max_bytes;
  c.lru_persist_interval = std::chrono::milliseconds(0);
  return c;
}

std::unique_ptr<ChunkCache> MustOpen(const CacheConfig& config,
                                     std::shared_ptr<CacheFs> cache_fs = nullptr) {
  auto cache = ChunkCache::Open(config, std::move(cache_fs));
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? std::move(*cache) : nullptr;
}

std::string ReadAll(ChunkCache& cache, const Digest& d, size_t size) {
  std::string out(size, '\0');
  auto n = cache.Read(d, 0, out.data(), out.size());
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return "";
  out.resize(*n);
  return out;
}

void FlipByteInFile(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << path;
  f.seekg(offset);
  char c;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x01));
}

// `count` distinct chunks (chunk i: size + i * size_step bytes of PatternBytes(seed + i)) and
// their digests, same index.
struct TestChunks {
  std::vector<std::string> bytes;
  std::vector<Digest> digests;
};
TestChunks MakeChunks(uint32_t count, size_t size, uint32_t seed, size_t size_step = 0) {
  TestChunks out;
  for (uint32_t i = 0; i < count; ++i) {
    out.bytes.push_back(PatternBytes(size + i * size_step, seed + i));
    out.digests.push_back(Digest::Of(out.bytes.back()));
  }
  return out;
}

TEST(ChunkCacheTest, PutThenReadReturnsExactBytesAndSubRanges) {
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path()));
  std::string data = PatternBytes(100000, 1);
  Digest d = Digest::Of(data);
  ASSERT_TRUE(cache->Put(d, data).ok());
  EXPECT_TRUE(cache->Contains(d));
  EXPECT_EQ(ReadAll(*cache, d, data.size()), data);

  char buf[1000];
  auto n = cache->Read(d, 12345, buf, sizeof(buf));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, sizeof(buf));
  EXPECT_EQ(std::string(buf, *n), data.substr(12345, 1000));
  // A range running past the end is cut at the end; past the end is OutOfRange.
  n = cache->Read(d, data.size() - 10, buf, sizeof(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), data.substr(data.size() - 10));
  n = cache->Read(d, data.size(), buf, sizeof(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(cache->Read(d, data.size() + 1, buf, 1).status().code(), absl::StatusCode::kOutOfRange);

  EXPECT_EQ(cache->Read(Digest::Of("other"), 0, buf, 1).status().code(),
            absl::StatusCode::kNotFound);
  // The file is the chunk, under its digest, read-only and private to the daemon's user.
  EXPECT_EQ(cache->ChunkPath(d), tmp.path() + "/chunks/" + d.hex().substr(0, 2) + "/" + d.hex());
  auto on_disk = testing::ReadFile(cache->ChunkPath(d));
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(*on_disk, data);
  struct stat st;
  ASSERT_EQ(::stat(cache->ChunkPath(d).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  ChunkCacheStats s = cache->stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.bytes_stored, data.size());
  EXPECT_EQ(s.misses, 1u);
}

// Chunks are private image data: a cache directory made wider by someone else (or an older
// version) is made 0700 again at Open, every directory of the cache included.
TEST(ChunkCacheTest, OpenMakesEveryCacheDirectoryPrivate) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/cache";
  for (const std::string& d : {dir, dir + "/chunks", dir + "/chunks/ab", dir + "/tmp"}) {
    ASSERT_EQ(::mkdir(d.c_str(), 0755), 0) << d;
    ASSERT_EQ(::chmod(d.c_str(), 0755), 0) << d;
  }
  auto cache = MustOpen(Config(dir));
  for (const std::string& d :
       {dir, dir + "/chunks", dir + "/chunks/ab", dir + "/chunks/00", dir + "/tmp"}) {
    struct stat st;
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
}

TEST(ChunkCacheTest, EqualChunksOfDifferentLayersAreStoredOnce) {
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path()));
  std::string shared = PatternBytes(65536, 2);
  std::string other = PatternBytes(4096, 3);
  Digest d = Digest::Of(shared);
  // Layer A stores it after its fetch, layer B stores it again, image C reads it.
  ASSERT_TRUE(cache->PutVerified(d, shared).ok());
  ASSERT_TRUE(cache->Put(d, shared).ok());
  ASSERT_TRUE(cache->Put(Digest::Of(other), other).ok());
  EXPECT_EQ(ReadAll(*cache, d, shared.size()), shared);

  Digest od = Digest::Of(other);
  std::vector<std::string> want = {d.hex().substr(0, 2) + "/" + d.hex(),
                                   od.hex().substr(0, 2) + "/" + od.hex()};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(FilesUnder(tmp.path() + "/chunks"), want);
  ChunkCacheStats s = cache->stats();
  EXPECT_EQ(s.entries, 2u);
  EXPECT_EQ(s.bytes_stored, shared.size() + other.size());
  EXPECT_EQ(s.bytes_written, shared.size() + other.size());
  EXPECT_EQ(s.store_errors, 0u);
}

TEST(ChunkCacheTest, CorruptPutBytesAreNeverStored) {
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path()));
  std::string data = PatternBytes(50000, 4);
  Digest d = Digest::Of(data);
  std::string bad = data;
  bad[777] ^= 0x40;

  absl::Status put = cache->Put(d, bad);
  EXPECT_EQ(put.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(put.message()), HasSubstr(d.ToString()));

  EXPECT_FALSE(cache->Contains(d));
  EXPECT_TRUE(FilesUnder(tmp.path() + "/chunks").empty());
  EXPECT_TRUE(FilesUnder(tmp.path() + "/tmp").empty());
  EXPECT_EQ(cache->stats().store_errors, 0u);  // refused, not a failed store

  // The good bytes are then stored and served normally.
  ASSERT_TRUE(cache->Put(d, data).ok());
  EXPECT_TRUE(cache->Contains(d));
  EXPECT_EQ(ReadAll(*cache, d, data.size()), data);
}

TEST(ChunkCacheTest, FileCorruptedOnDiskIsDetectedBeforeAnyByteIsServed) {
  TempDir tmp;
  std::string data = PatternBytes(300000, 5);
  Digest d = Digest::Of(data);
  std::string path;
  {
    auto cache = MustOpen(Config(tmp.path()));
    ASSERT_TRUE(cache->Put(d, data).ok());
    path = cache->ChunkPath(d);
  }
  FlipByteInFile(path, 299999);  // the last byte: a sub-range read of the start must fail too

  auto cache = MustOpen(Config(tmp.path()));
  ASSERT_TRUE(cache->Contains(d));
  char buf[16];
  auto n = cache->Read(d, 0, buf, sizeof(buf));
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(n.status().message()), HasSubstr(d.ToString()));
  EXPECT_FALSE(cache->Contains(d));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(cache->stats().corrupt_removed, 1u);
  EXPECT_EQ(cache->stats().hits, 0u);
  EXPECT_EQ(cache->stats().misses, 1u);

  // The caller then fetches the chunk again and stores the good bytes in its place.
  ASSERT_TRUE(cache->Put(d, data).ok());
  n = cache->Read(d, 5, buf, sizeof(buf));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(std::string(buf, *n), data.substr(5, 16));
  EXPECT_EQ(*testing::ReadFile(cache->ChunkPath(d)), data);
}

// Records the largest single read the cache asks its file system for.
class ReadSizeRecordingFs : public FaultCacheFs {
 public:
  std::atomic<size_t> largest_read{0};
  absl::StatusOr<size_t> ReadAt(int fd, uint64_t offset, char* buf, size_t length,
                                const std::string& path) override {
    if (length > largest_read) largest_read = length;
    return FaultCacheFs::ReadAt(fd, offset, buf, length, path);
  }
};

// A chunk an earlier process stored is verified on first use by hashing the file a block at a
// time: memory stays a block, whatever the chunk's size (issue 12: bounded memory per read).
TEST(ChunkCacheTest, BigStoredChunkIsVerifiedAfterRestartInBoundedBlocks) {
  TempDir tmp;
  const std::string data = PatternBytes((5 << 20) + 123, 9);
  const Digest d = Digest::Of(data);
  {
    auto cache = MustOpen(Config(tmp.path()));
    ASSERT_TRUE(cache->Put(d, data).ok());
  }
  auto recording = std::make_shared<ReadSizeRecordingFs>();
  auto cache = MustOpen(Config(tmp.path()), recording);
  std::string buf(4096, '\0');
  const uint64_t offset = (2 << 20) - 100;  // across a verification block boundary
  auto n = cache->Read(d, offset, buf.data(), buf.size());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(buf.substr(0, *n), data.substr(offset, 4096));
  EXPECT_LE(recording->largest_read.load(), size_t{1} << 20);
  n = cache->Read(d, data.size() - 1, buf.data(), buf.size());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(buf.substr(0, *n), data.substr(data.size() - 1));
  EXPECT_EQ(cache->stats().corrupt_removed, 0u);
}

TEST(ChunkCacheTest, FileTruncatedBehindOurBackIsDataLoss) {
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path()));
  std::string data = PatternBytes(8192, 6);
  Digest d = Digest::Of(data);
  ASSERT_TRUE(cache->Put(d, data).ok());
  ASSERT_EQ(::truncate(cache->ChunkPath(d).c_str(), 4096), 0);
  char buf[100];
  auto n = cache->Read(d, 8000, buf, sizeof(buf));
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(cache->Contains(d));
}

// A helper process stores a 4 MiB chunk and is SIGKILLed at `stage`.
void CrashWhileStoring(const std::string& stage) {
  TempDir tmp;
  std::string dir = tmp.Sub("cache");
  std::string ready = tmp.Sub("ready");
  std::string data = PatternBytes(4 << 20, 7);
  Digest d = Digest::Of(data);
  std::string final_path = dir + "/chunks/" + d.hex().substr(0, 2) + "/" + d.hex();

  auto child = testing::Subprocess::Start(
      {testing::BinaryDir() + "/bin/cache_crash_helper", dir, stage, ready}, tmp.Sub("log"));
  ASSERT_TRUE(child.ok()) << child.status();
  testing::WaitUntil([&] { return fs::exists(ready) || !child->running(); },
                     std::chrono::seconds(30));
  ASSERT_TRUE(fs::exists(ready)) << child->ReadLog();

  // The writer is stopped mid-store: the bytes exist only as a temp file.
  std::vector<std::string> temps = FilesUnder(dir + "/tmp");
  ASSERT_EQ(temps.size(), 1u);
  uint64_t temp_size = fs::file_size(dir + "/tmp/" + temps[0]);
  EXPECT_EQ(temp_size, stage == "write" ? data.size() / 2 : data.size());
  EXPECT_FALSE(fs::exists(final_path));
  // While it lives, the directory is locked against a second owner.
  auto locked = ChunkCache::Open(Config(dir));
  EXPECT_EQ(locked.status().code(), absl::StatusCode::kFailedPrecondition);

  child->Kill();
  EXPECT_FALSE(fs::exists(final_path));

  auto cache = MustOpen(Config(dir));
  ASSERT_NE(cache, nullptr);
  EXPECT_FALSE(cache->Contains(d));
  EXPECT_TRUE(FilesUnder(dir + "/tmp").empty());
  EXPECT_TRUE(FilesUnder(dir + "/chunks").empty());
  char buf[1];
  EXPECT_EQ(cache->Read(d, 0, buf, 1).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(cache->Put(d, data).ok());
  EXPECT_EQ(ReadAll(*cache, d, data.size()), data);
}

TEST(ChunkCacheTest, KillMidWriteLeavesNoVisiblePartialChunk) { CrashWhileStoring("write"); }

TEST(ChunkCacheTest, KillBeforeRenameLeavesNoVisibleChunk) { CrashWhileStoring("rename"); }

TEST(ChunkCacheTest, EvictionRespectsLimitAndLruOrder) {
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path(), 4000));
  auto [chunks, ds] = MakeChunks(6, 1000, 100);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(cache->Put(ds[i], chunks[i]).ok());
  EXPECT_EQ(cache->stats().bytes_stored, 4000u);
  // Touch 0 and 1: now 2 is the least recently used, then 3.
  EXPECT_EQ(ReadAll(*cache, ds[0], 1000), chunks[0]);
  char b;
  ASSERT_TRUE(cache->Read(ds[1], 999, &b, 1).ok());
  ASSERT_TRUE(cache->Put(ds[4], chunks[4]).ok());
  EXPECT_FALSE(cache->Contains(ds[2]));
  EXPECT_TRUE(cache->Contains(ds[3]));
  ASSERT_TRUE(cache->Put(ds[5], chunks[5]).ok());
  EXPECT_FALSE(cache->Contains(ds[3]));
  for (int i : {0, 1, 4, 5}) EXPECT_TRUE(cache->Contains(ds[i])) << i;
  EXPECT_FALSE(fs::exists(cache->ChunkPath(ds[2])));
  EXPECT_FALSE(fs::exists(cache->ChunkPath(ds[3])));
  EXPECT_EQ(FilesUnder(tmp.path() + "/chunks").size(), 4u);
  ChunkCacheStats s = cache->stats();
  EXPECT_EQ(s.bytes_stored, 4000u);
  EXPECT_EQ(s.evictions, 2u);

  // A chunk larger than the whole cache is refused and evicts nothing.
  std::string huge = PatternBytes(5000, 200);
  EXPECT_EQ(cache->Put(Digest::Of(huge), huge).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->PutVerified(Digest::Of(huge), huge).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->stats().entries, 4u);
  EXPECT_EQ(cache->stats().evictions, 2u);
  EXPECT_EQ(cache->stats().store_errors, 2u);
}

// Graduated layer copies count against max_bytes (issue 17): registering them evicts the least
// recently used chunks at once, later stores keep the sum under the budget, and a chunk a copy
// now holds can be removed outright; listeners hear of both.
TEST(ChunkCacheTest, ExternalBytesCountAgainstTheBudgetAndRemoveDropsAChunk) {
  struct Removed : ChunkCache::EvictionListener {
    void OnChunkRemoved(const Digest& d) override { digests.push_back(d); }
    std::vector<Digest> digests;
  } removed;
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path(), 4000));
  cache->AddListener(&removed);
  auto [chunks, ds] = MakeChunks(4, 1000, 300);
  for (size_t i = 0; i < ds.size(); ++i) ASSERT_TRUE(cache->Put(ds[i], chunks[i]).ok());
  cache->SetExternalBytes(1500);  // 4000 + 1500 > 4000: the two oldest chunks go
  EXPECT_FALSE(cache->Contains(ds[0]));
  EXPECT_FALSE(cache->Contains(ds[1]));
  EXPECT_TRUE(cache->Contains(ds[2]));
  EXPECT_EQ(cache->stats().bytes_stored, 2000u);
  EXPECT_EQ(cache->stats().external_bytes, 1500u);
  ASSERT_TRUE(cache->Put(ds[0], chunks[0]).ok());  // 3000 + 1500 > 4000: chunk 2 goes
  EXPECT_FALSE(cache->Contains(ds[2]));
  EXPECT_EQ(cache->stats().bytes_stored, 2000u);

  cache->Remove(ds[3]);
  EXPECT_FALSE(cache->Contains(ds[3]));
  EXPECT_FALSE(fs::exists(cache->ChunkPath(ds[3])));
  char b;
  EXPECT_EQ(cache->Read(ds[3], 0, &b, 1).status().code(), absl::StatusCode::kNotFound);
  cache->Remove(ds[3]);  // not stored: nothing happens
  EXPECT_EQ(cache->stats().bytes_stored, 1000u);
  std::vector<Digest> expected = {ds[0], ds[1], ds[2], ds[3]};
  EXPECT_EQ(removed.digests, expected);
  cache->SetExternalBytes(0);
  EXPECT_EQ(cache->stats().external_bytes, 0u);
  cache->RemoveListener(&removed);
}

// Keyed external accounts add up (the graduated account "" beside per-copy ones); a
// reservation evicts to make room but is refused, account unchanged, when the accounts alone
// would exceed the budget; closing an account gives its room back; a chunk made coldest is the
// next one evicted, whatever its age.
TEST(ChunkCacheTest, KeyedExternalAccountsReservationsAndColdestFirst) {
  TempDir tmp;
  auto cache = MustOpen(Config(tmp.path(), 4000));
  auto [chunks, ds] = MakeChunks(4, 1000, 700);
  for (size_t i = 0; i < ds.size(); ++i) ASSERT_TRUE(cache->Put(ds[i], chunks[i]).ok());
  cache->MakeColdest(ds[3]);  // the newest chunk, now first in line
  cache->SetExternalBytes(500);
  ASSERT_TRUE(cache->ReserveExternalBytes("copy-a", 400).ok());  // 4000 + 900: one chunk goes
  EXPECT_FALSE(cache->Contains(ds[3]));
  EXPECT_TRUE(cache->Contains(ds[0]));
  EXPECT_EQ(cache->stats().external_bytes, 900u);
  EXPECT_EQ(cache->stats().external_accounts, 2u);
  EXPECT_EQ(cache->stats().bytes_stored, 3000u);
  EXPECT_EQ(cache->ExternalBytes("copy-a"), 400u);

  // 500 + 400 + 3200 > 4000 even with no chunk left: refused, nothing evicted.
  absl::Status s = cache->ReserveExternalBytes("copy-b", 3200);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(cache->ExternalBytes("copy-b"), 0u);
  EXPECT_EQ(cache->stats().bytes_stored, 3000u);
  // Re-reserving an account replaces its bytes: 500 + 3500 fits with every chunk gone.
  ASSERT_TRUE(cache->ReserveExternalBytes("copy-a", 3500).ok());
  EXPECT_EQ(cache->stats().bytes_stored, 0u);
  EXPECT_EQ(cache->stats().external_bytes, 4000u);
  cache->SetExternalBytes("copy-a", 0);  // the copy is deleted
  EXPECT_EQ(cache->stats().external_bytes, 500u);
  EXPECT_EQ(cache->stats().external_accounts, 1u);
  for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(cache->Put(ds[i], chunks[i]).ok());
  EXPECT_EQ(cache->stats().bytes_stored, 3000u);
  cache->MakeColdest(Digest::Of("never stored"));  // no-op
  cache->SetExternalBytes(0);
  EXPECT_EQ(cache->stats().external_bytes, 0u);
  EXPECT_EQ(cache->stats().external_accounts, 0u);
}

TEST(ChunkCacheTest, RestartKeepsEntriesAndLruOrder) {
  TempDir tmp;
  auto [chunks, ds] = MakeChunks(4, 1000, 300, 1);
  {
    auto cache = MustOpen(Config(tmp.path(), 1000000));
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache->Put(ds[i], chunks[i]).ok());
    EXPECT_EQ(ReadAll(*cache, ds[0], chunks[0].size()), chunks[0]);  // order now 1, 2, 0
  }
  // A stale temp file from some crash is removed on open.
  ASSERT_TRUE(testing::WriteFile(tmp.path() + "/tmp/deadbeef.3", "partial").ok());
  {
    auto cache = MustOpen(Config(tmp.path(), 1000000));
    EXPECT_TRUE(FilesUnder(tmp.path() + "/tmp").empty());
    ChunkCacheStats s = cache->stats();
    EXPECT_EQ(s.entries, 3u);
    EXPECT_EQ(s.bytes_stored, 1000u + 1001u + 1002u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(ReadAll(*cache, ds[i], chunks[i].size()), chunks[i]);
    EXPECT_EQ(cache->stats().hits, 3u);
    EXPECT_EQ(cache->stats().corrupt_removed, 0u);
  }
  // The reads above made the order (old to new) 0, 1, 2. Reopened with room for two chunks,
  // 0 goes first; the next store then evicts 1.
  {
    auto cache = MustOpen(Config(tmp.path(), 2100));
    EXPECT_FALSE(cache->Contains(ds[0]));
    EXPECT_TRUE(cache->Contains(ds[1]));
    EXPECT_TRUE(cache->Contains(ds[2]));
    EXPECT_EQ(cache->stats().evictions, 1u);
    ASSERT_TRUE(cache->Put(ds[3], chunks[3]).ok());
    EXPECT_FALSE(cache->Contains(ds[1]));
    EXPECT_TRUE(cache->Contains(ds[2]));
  }
}

TEST(ChunkCacheTest, RestartRebuildsLruOrderFromAccessNotInsertion) {
  TempDir tmp;
  auto [chunks, ds] = MakeChunks(4, 1000, 400);
  {
    auto cache = MustOpen(Config(tmp.path(), 3000));
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache->Put(ds[i], chunks[i]).ok());
    char b;
    ASSERT_TRUE(cache->Read(ds[0], 0, &b, 1).ok());  // order (old→new): 1, 2, 0
  }
  auto cache = MustOpen(Config(tmp.path(), 3000));
  ASSERT_TRUE(cache->Put(ds[3], chunks[3]).ok());
  EXPECT_FALSE(cache->Contains(ds[1]));
  EXPECT_TRUE(cache->Contains(ds[0]));
  EXPECT_TRUE(cache->Contains(ds[2]));
}

TEST(ChunkCacheTest, ConcurrentReadsStoresAndEvictionsServeOnlyExactBytes) {
  TempDir tmp;
  CacheConfig config = Config(tmp.path(), 8 * 4096);
  config.max_open_files = 3;
  auto cache = MustOpen(config);
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 20; ++i) chunks.push_back(PatternBytes(4096, 600 + i));
  std::atomic<int> fetches{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      uint32_t x = 12345 + t;
      for (int op = 0; op < 400; ++op) {
        x = x * 1103515245 + 12345;
        const std::string& c = chunks[(x >> 8) % chunks.size()];
        size_t off = (x >> 3) % 4000;
        char buf[64];
        const Digest d = Digest::Of(c);
        auto n = cache->Read(d, off, buf, sizeof(buf));
        if (n.ok()) {
          if (std::string(buf, *n) != c.substr(off, 64)) ++wrong;
        } else if (absl::IsNotFound(n.status())) {
          // A miss: "fetch" the chunk and store it, as LayerReader does.
          ++fetches;
          if (!cache->PutVerified(d, c).ok()) ++wrong;
        } else {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  ChunkCacheStats s = cache->stats();
  EXPECT_LE(s.bytes_stored, 8u * 4096);
  EXPECT_LE(s.open_fds, 3u);
  EXPECT_EQ(FilesUnder(tmp.path() + "/chunks").size(), s.entries);
  EXPECT_EQ(s.hits + s.misses, 4u * 400);
  EXPECT_GE(fetches.load(), 20);
  EXPECT_GT(s.evictions, 0u);
}

TEST(ChunkCacheTest, NoSpaceOnWriteGivesClearErrorAndNoVisibleEntry) {
  TempDir tmp;
  auto faulty = std::make_shared<FaultCacheFs>();
  auto cache = MustOpen(Config(tmp.path()), faulty);
  std::string data = PatternBytes(100000, 11);
  Digest d = Digest::Of(data);
  faulty->write_errno = ENOSPC;

  absl::Status s = cache->Put(d, data);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr(d.ToString()));
  EXPECT_THAT(std::string(s.message()), HasSubstr("No space left on device"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(tmp.path() + "/tmp/"));
  EXPECT_FALSE(cache->Contains(d));
  EXPECT_TRUE(FilesUnder(tmp.path() + "/chunks").empty());
  EXPECT_TRUE(FilesUnder(tmp.path() + "/tmp").empty());

  // Each failed store is counted (lazypull_chunk_cache_store_errors_total).
  EXPECT_EQ(cache->PutVerified(d, data).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(cache->Contains(d));
  EXPECT_EQ(cache->stats().store_errors, 2u);
  EXPECT_EQ(FilesUnder(tmp.path()), std::vector<std::string>{"lock"});

  faulty->write_errno = 0;
  ASSERT_TRUE(cache->Put(d, data).ok());
  EXPECT_EQ(ReadAll(*cache, d, data.size()), data);
}

TEST(ChunkCacheTest, FailedRenameLeavesNoEntryAndNoTempFile) {
  TempDir tmp;
  auto faulty = std::make_shared<FaultCacheFs>();
  auto cache = MustOpen(Config(tmp.path()), faulty);
  std::string data = PatternBytes(1000, 12);
  Digest d = Digest::Of(data);
  faulty->rename_errno = EIO;
  absl::Status s = cache->Put(d, data);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("rename"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(d.ToString()));
  EXPECT_FALSE(cache->Contains(d));
  EXPECT_EQ(FilesUnder(tmp.path()), std::vector<std::string>{"lock"});
}

TEST(ChunkCacheTest, OpenFdCacheIsBounded) {
  TempDir tmp;
  CacheConfig config = Config(tmp.path());
  config.max_open_files = 2;
  auto cache = MustOpen(config);
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 5; ++i) {
    chunks.push_back(PatternBytes(3000, 500 + i));
    ASSERT_TRUE(cache->Put(Digest::Of(chunks[i]), chunks[i]).ok());
  }
  for (int round = 0; round < 3; ++round) {
    for (const auto& c : chunks) EXPECT_EQ(ReadAll(*cache, Digest::Of(c), c.size()), c);
  }
  EXPECT_EQ(cache->stats().open_fds, 2u);
  EXPECT_EQ(cache->stats().hits, 15u);
}

TEST(ChunkCacheTest, OpenRejectsMissingDirAndSecondOwner) {
  TempDir tmp;
  EXPECT_EQ(ChunkCache::Open(CacheConfig{}).status().code(), absl::StatusCode::kInvalidArgument);
  auto first = MustOpen(Config(tmp.path()));
  auto second = ChunkCache::Open(Config(tmp.path()));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(tmp.path() + "/lock"));
  first.reset();
  EXPECT_TRUE(ChunkCache::Open(Config(tmp.path())).ok());
}

}  // namespace
}  // namespace lazypull
