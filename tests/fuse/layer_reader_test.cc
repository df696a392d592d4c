// LayerReader without FUSE (label unit): zstd-frame chunks in an in-memory blob, indexes built
// with LayerIndexBuilder, a real ChunkCache in a TempDir.
#include "fetcher/layer_reader/layer_reader.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/layer_index_builder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fuse/fault_blob_reader.h"
#include "tests/fuse/test_layer.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::FaultBlobReader;
using ::lazypull::testing::TempDir;
using ::lazypull::testing::WaitUntil;

TEST(LayerReaderTest, RejectsBadOptions) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(1, 100);
  LayerReaderOptions o;
  o.background_policy.max_in_flight = 0;
  EXPECT_EQ(LayerReader::Create("x", l.index, l.blob, cache.get(), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LayerReader::Create("x", nullptr, l.blob, cache.get(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LayerReaderTest, ReadsClampAtEofAndHitTheCacheAfterOneFetch) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(4, 1000);
  LayerReaderOptions o;
  o.background_fetch = false;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  std::string buf(2000, 'x');
  auto n = (*r)->Read(InoOf(l, 2), 500, buf.data(), buf.size());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 500u);
  EXPECT_EQ(buf.substr(0, 500), l.contents[2].substr(500));
  EXPECT_EQ((*(*r)->Read(InoOf(l, 2), 1000, buf.data(), 10)), 0u);  // at EOF
  EXPECT_EQ((*r)->Read(format::kRootIno, 0, buf.data(), 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(l.blob->requests(), 1u);
  EXPECT_EQ((*r)->Stats().cache_misses, 1u);
  // Once stored (just after its readers were served), the chunk is read from the cache.
  ASSERT_TRUE(
      WaitUntil([&] { return cache->Contains(l.index->Chunks(InoOf(l, 2))[0].digest_value()); }));
  ASSERT_TRUE((*r)->Read(InoOf(l, 2), 0, buf.data(), 1000).ok());
  EXPECT_EQ((*r)->Stats().cache_hits, 1u);
  EXPECT_EQ(l.blob->requests(), 1u);
}

TEST(LayerReaderTest, ChunksWithoutDigestAreServedButNeverCached) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(2, 4096, /*digests=*/false);
  LayerReaderOptions o;
  o.background_fetch = false;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  std::string buf(4096, 'x');
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_TRUE((*r)->Read(InoOf(l, 1), 0, buf.data(), buf.size()).ok());
    EXPECT_EQ(buf, l.contents[1]);
  }
  EXPECT_EQ(l.blob->requests(), 2u);
  EXPECT_EQ(cache->stats().entries, 0u);
}

TEST(LayerReaderTest, BackgroundFetchHonoursBandwidthAndRequestSize) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(40, 64 << 10);  // ~ small compressed frames
  const uint64_t total = l.blob->Size();
  LayerReaderOptions o;
  o.prefetch = false;
  o.background_silence = std::chrono::milliseconds(0);
  o.background_request_bytes = total / 8 + 1;
  o.background_policy.bandwidth = total * 2;  // bytes per second: ~0.5 s for the whole layer
  o.background_policy.max_in_flight = 1;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  auto start = std::chrono::steady_clock::now();
  (*r)->StartBackground();
  ASSERT_TRUE((*r)->WaitBackground(std::chrono::seconds(30)));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(300));
  LayerReaderStats s = (*r)->Stats();
  EXPECT_EQ(s.background, "done");
  EXPECT_EQ(s.prefetch, "off");
  EXPECT_EQ(s.local_chunks, 40u);
  EXPECT_EQ(s.bytes_fetched, total);
  for (const ByteRange& range : l.blob->ranges()) EXPECT_LE(range.length, total / 8 + 1);
  EXPECT_GE(l.blob->requests(), 8u);
  // Fully local: nothing more is fetched.
  l.blob->SetFailing(true);
  std::string buf(64 << 10, 'x');
  for (int i = 0; i < 40; ++i) ASSERT_TRUE((*r)->Read(InoOf(l, i), 0, buf.data(), buf.size()).ok());
}

TEST(LayerReaderTest, DestructionStopsBackgroundFetch) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(50, 16 << 10);
  LayerReaderOptions o;
  o.prefetch = false;
  o.background_silence = std::chrono::milliseconds(0);
  o.background_request_bytes = 1;            // one chunk per request
  o.background_policy.bandwidth = 20 << 10;  // ~1 s per chunk: would take a minute
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  (*r)->StartBackground();
  ASSERT_TRUE(WaitUntil([&] { return l.blob->requests() >= 1; }));  // the fetch is under way
  auto start = std::chrono::steady_clock::now();
  r->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_LT(l.blob->requests(), 50u);
}

// Reads file i and checks its bytes.
void ExpectFile(LayerReader& r, const Layer& l, int i) {
  std::string buf(l.contents[i].size(), 'x');
  auto n = r.Read(InoOf(l, i), 0, buf.data(), buf.size());
  ASSERT_TRUE(n.ok()) << "file " << i << ": " << n.status();
  EXPECT_EQ(*n, buf.size());
  EXPECT_TRUE(buf == l.contents[i]) << "file " << i;
}

TEST(LayerReaderTest, MissFetchesBlobNeighboursInTheSameRequest) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(200, 3000);  // small files, stored in directory (= blob) order
  LayerReaderOptions o;
  o.directory_batch.small_file = 0;  // blob-order readahead alone
  o.background_fetch = false;
  o.readahead_window = 64 << 10;
  o.readahead_window_min = 16 << 10;
  o.readahead_window_max = 1 << 20;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  ExpectFile(**r, l, 0);
  // One request fetched file 0 and its blob neighbours, up to the window.
  ASSERT_EQ(l.blob->requests(), 1u);
  EXPECT_GT(l.blob->ranges()[0].length, 10 * l.index->Chunks(InoOf(l, 0))[0].compressed_length);
  EXPECT_LE(l.blob->ranges()[0].length, (64u << 10) + (4u << 10));
  LayerReaderStats s = (*r)->Stats();
  EXPECT_GT(s.readahead_chunks, 10u);
  // A program reading the neighbours in order: served by the readahead, and reading half a
  // window fetches the next (larger) window before the program reaches it.
  for (int i = 1; i < 200; ++i) ExpectFile(**r, l, i);
  s = (*r)->Stats();
  EXPECT_EQ(s.cache_hits + s.fetch_waits, 199u);  // every later file: no miss of its own
  EXPECT_GT(s.readahead_window, 64u << 10);       // grown
  EXPECT_LE(l.blob->requests(), 8u);              // vs 200 without readahead
  EXPECT_EQ(s.readahead_used, s.readahead_chunks);
  EXPECT_EQ(s.bytes_read, 200u * 3000);
}

TEST(LayerReaderTest, UnusedReadaheadShrinksTheWindow) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(1500, 3000);
  LayerReaderOptions o;
  o.directory_batch.small_file = 0;  // blob-order readahead alone
  o.background_fetch = false;
  o.readahead_window = 64 << 10;
  o.readahead_window_min = 8 << 10;
  o.readahead_window_max = 1 << 20;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  // Reads farther apart than the largest window: no neighbour is ever read.
  const uint64_t per_file = l.index->Chunks(InoOf(l, 0))[0].compressed_length;
  const int stride = static_cast<int>((64 << 10) / per_file) + 2;
  ASSERT_LT(4 * stride, 1500);
  for (int k = 0; k < 5; ++k) ExpectFile(**r, l, k * stride);
  LayerReaderStats s = (*r)->Stats();
  EXPECT_EQ(s.readahead_window, 8u << 10);  // 64 → 32 → 16 → 8 KiB
  EXPECT_EQ(s.readahead_used, 0u);
  EXPECT_EQ(l.blob->requests(), 5u);
}

TEST(LayerReaderTest, ReadaheadNeverServesUnverifiedBytes) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(50, 3000);
  LayerReaderOptions o;
  o.background_fetch = false;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  // A flipped byte in file 3's frame, which file 0's readahead fetches.
  const format::Chunk& bad = l.index->Chunks(InoOf(l, 3))[0];
  l.blob->CorruptByte(bad.compressed_offset + bad.compressed_length / 2);
  ExpectFile(**r, l, 0);
  EXPECT_EQ(l.blob->requests(), 1u);
  EXPECT_FALSE(cache->Contains(bad.digest_value()));
  std::string buf(3000, 'x');
  auto n = (*r)->Read(InoOf(l, 3), 0, buf.data(), buf.size());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  EXPECT_GE((*r)->Stats().verify_errors, 1u);
  // The neighbours that verified were served from the same request.
  ExpectFile(**r, l, 2);
  ExpectFile(**r, l, 4);
  // With the fault gone, file 3 is fetched again and served.
  l.blob->CorruptByte(std::nullopt);
  ExpectFile(**r, l, 3);
  // Stored once its readers were served.
  EXPECT_TRUE(WaitUntil([&] { return cache->Contains(bad.digest_value()); }));
}

// Bytes from a source the blob reader can exclude (a registry mirror holding other bytes under
// the digest): the chunk is fetched once more, from elsewhere, and the read succeeds; a source
// it cannot exclude fails the read as before (above).
TEST(LayerReaderTest, ChunkFromAnExcludedSourceIsFetchedAgain) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(5, 3000);
  LayerReaderOptions o;
  o.background_fetch = false;
  o.readahead_window = 0;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  const format::Chunk& bad = l.index->Chunks(InoOf(l, 2))[0];
  l.blob->CorruptByte(bad.compressed_offset + 7);
  l.blob->SetCorruptionExcludable(true);
  ExpectFile(**r, l, 2);
  EXPECT_EQ(l.blob->corruption_reports(), 1);
  EXPECT_EQ((*r)->Stats().verify_errors, 1u);
  EXPECT_EQ(l.blob->requests(), 2u);
  EXPECT_TRUE(WaitUntil([&] { return cache->Contains(bad.digest_value()); }));
}

TEST(LayerReaderTest, BackgroundFetchCompletesALayerNobodyReads) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(30, 20000);
  LayerReaderOptions o;
  o.background_silence = std::chrono::milliseconds(50);
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->Stats().background, "pending");
  (*r)->StartBackground();
  ASSERT_TRUE((*r)->WaitBackground(std::chrono::seconds(60)));
  LayerReaderStats s = (*r)->Stats();
  EXPECT_EQ(s.background, "done");
  EXPECT_EQ(s.local_chunks, s.total_chunks);
  EXPECT_EQ(s.background_bytes, l.blob->Size());
  EXPECT_EQ(s.bytes_read, 0u);
}

// A read issued while background requests are in flight is served before the background
// fetch sends anything more: background yields to on-demand reads (order, not time).
TEST(LayerReaderTest, OnDemandReadGoesBeforeTheBackgroundQueue) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(60, 20000);
  LayerReaderOptions o;
  o.directory_batch.small_file = 0;  // blob-order readahead alone
  o.prefetch = false;
  o.readahead_window = 0;
  o.readahead_bytes = 0;
  o.background_silence = std::chrono::milliseconds(0);
  o.background_request_bytes = 1;  // one chunk per background request
  o.background_policy.max_in_flight = 1;
  o.background_policy.quiet = std::chrono::hours(1);  // after a read: no more background
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  l.blob->SetBlocked(true);
  (*r)->StartBackground();
  l.blob->WaitBlocked(1);  // a background request is in flight (file 0)
  EXPECT_EQ(l.blob->requests(), 1u);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    ExpectFile(**r, l, 59);  // far from what the background fetch has reached
    done = true;
  });
  l.blob->WaitBlocked(2);  // the read's request is in flight too
  l.blob->SetBlocked(false);
  reader.join();
  // Only the background request already in flight and the read's own were sent.
  EXPECT_EQ(l.blob->requests(), 2u);
  std::vector<ByteRange> ranges = l.blob->ranges();
  EXPECT_EQ(ranges[1].offset, l.index->Chunks(InoOf(l, 59))[0].compressed_offset);
  LayerReaderStats s = (*r)->Stats();
  EXPECT_LT(s.local_chunks, s.total_chunks);
  // The background fetch says why it waits once it has looked again.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (s.background != "paused" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
    s = (*r)->Stats();
  }
  EXPECT_EQ(s.background, "paused");
  EXPECT_EQ(l.blob->requests(), 2u);
}

TEST(BackgroundSchedulerTest, PausesForOnDemandWorkAndPacesToTheBudget) {
  BackgroundSchedulerOptions opts;
  opts.quiet = std::chrono::milliseconds(0);
  opts.bandwidth = 1 << 20;  // 1 MiB/s
  opts.max_in_flight = 1;
  BackgroundScheduler s(opts);
  auto never = [] { return false; };
  // Free to go.
  std::optional<BackgroundScheduler::Permit> p = s.Acquire(never);
  ASSERT_TRUE(p.has_value());
  s.Charge(512 << 10);
  // Concurrency 1: a second one waits (and says why) until the first is released.
  std::atomic<bool> stop{false};
  std::vector<BackgroundScheduler::WaitReason> told;
  std::mutex mu;
  // On-demand work first (it outranks concurrency as the reason to wait): begun after the
  // thread, the thread could meet the concurrency limit first.
  auto fg = s.BeginForeground();
  std::thread t([&] {
    auto q = s.Acquire([&] { return stop.load(); },
                       [&](BackgroundScheduler::WaitReason r) {
                         std::lock_guard<std::mutex> lock(mu);
                         told.push_back(r);
                       });
    EXPECT_FALSE(q.has_value());
  });
  while (true) {
    std::lock_guard<std::mutex> lock(mu);
    if (!told.empty()) break;
  }
  stop = true;
  s.Wake();
  t.join();
  EXPECT_EQ(told.front(), BackgroundScheduler::WaitReason::kOnDemand);
  EXPECT_EQ(s.StatusJson()["on_demand_fetches"], 1);
  EXPECT_EQ(s.StatusJson()["background_requests"], 1);
  // Auto budget: a fraction of the measured link.
  BackgroundSchedulerOptions auto_opts;
  auto_opts.bandwidth_fraction = 0.5;
  BackgroundScheduler a(auto_opts);
  EXPECT_EQ(a.budget(), auto_opts.initial_bandwidth);
  a.RecordTransfer(10 << 20, std::chrono::seconds(1));
  EXPECT_EQ(a.budget(), 5u << 20);
  a.RecordTransfer(1000, std::chrono::milliseconds(1));  // too small to say anything
  EXPECT_EQ(a.budget(), 5u << 20);
}

// Zero-copy path: spans point into verified cache files only; the bytes they name are exact.
TEST(LayerReaderTest, ReadSpansNameOnlyVerifiedCacheFiles) {
  TempDir dir;
  Layer l = MakeLayer(3, 5000);
  LayerReaderOptions o;
  o.background_fetch = false;
  o.readahead_window = 0;
  std::vector<LayerReader::Span> spans;
  {
    auto cache = OpenCache(dir);
    auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE((*r)->ReadSpans(InoOf(l, 1), 0, 5000, &spans));  // not fetched yet
    ExpectFile(**r, l, 1);
    // The chunk file appears once the readers were served.
    ASSERT_TRUE(WaitUntil([&] { return (*r)->ReadSpans(InoOf(l, 1), 100, 1000, &spans); }));
    ASSERT_EQ(spans.size(), 1u);
    ASSERT_TRUE(spans[0].file.has_value());
    std::string got(spans[0].length, '\0');
    ASSERT_EQ(pread(spans[0].file->fd(), got.data(), got.size(), spans[0].offset), 1000);
    EXPECT_EQ(got, l.contents[1].substr(100, 1000));
    // Past EOF: nothing to send, and no fetch needed.
    ASSERT_TRUE((*r)->ReadSpans(InoOf(l, 1), 9000, 10, &spans));
    EXPECT_TRUE(spans.empty());
  }
  // A new process's cache: the file is untrusted until a Read has hashed it.
  auto cache = OpenCache(dir);
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->ReadSpans(InoOf(l, 1), 0, 5000, &spans));
  ExpectFile(**r, l, 1);
  EXPECT_TRUE(WaitUntil([&] { return (*r)->ReadSpans(InoOf(l, 1), 0, 5000, &spans); }));
}

// One big file stored as ONE chunk (legal: eStargz without chunkSize), larger than
// max_chunk_in_memory: it streams through a verified temp file, never whole in memory.
struct BigChunkLayer {
  std::shared_ptr<const format::LayerIndex> index;
  std::shared_ptr<FaultBlobReader> blob;
  std::string content;
  format::Chunk chunk;
};

BigChunkLayer MakeBigChunkLayer(size_t size, bool gzip) {
  BigChunkLayer l;
  l.content.resize(size);
  for (size_t j = 0; j < size; ++j) l.content[j] = static_cast<char>((j * 13 + j / 4096) % 251);
  // A gzip member may start with other bytes (inner_offset) and go on with the next entry's
  // tar header, as in eStargz.
  const std::string prefix(100, 'p'), suffix(512, 's');
  absl::StatusOr<std::string> compressed = gzip
                                               ? codec::GzipCompress(prefix + l.content + suffix, 1)
                                               : codec::ZstdCompress(l.content, 1);
  EXPECT_TRUE(compressed.ok());
  format::Chunk& c = l.chunk;
  c.compression =
      gzip ? format::ChunkCompression::kGzipMember : format::ChunkCompression::kZstdFrame;
  c.compressed_offset = 0;
  c.compressed_length = compressed->size();
  c.inner_offset = gzip ? prefix.size() : 0;
  c.length = size;
  std::string raw = Digest::Of(l.content).hex();
  for (int k = 0; k < 32; ++k) c.digest[k] = std::stoi(raw.substr(2 * k, 2), nullptr, 16);
  c.has_digest = true;
  format::LayerIndexBuilder b(
      gzip ? format::LayerFormat::kEstargz : format::LayerFormat::kZstdChunked, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  EXPECT_TRUE(b.AddRegular("big", meta, size, {c}).ok());
  auto index = b.Finish(Digest::Of("toc"), compressed->size(), compressed->size());
  EXPECT_TRUE(index.ok()) << index.status();
  l.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  l.blob = std::make_shared<FaultBlobReader>(NewStringBlobReader(*compressed));
  return l;
}

TEST(LayerReaderTest, ChunkLargerThanMemoryBudgetStreamsThroughAVerifiedFile) {
  for (bool gzip : {false, true}) {
    TempDir dir;
    auto cache = OpenCache(dir);
    BigChunkLayer l = MakeBigChunkLayer(12 << 20, gzip);
    LayerReaderOptions o;
    o.background_fetch = false;
    o.max_chunk_in_memory = 1 << 20;
    auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
    ASSERT_TRUE(r.ok());
    const format::Ino ino = *l.index->LookupPath("big");
    for (uint64_t off : {uint64_t{0}, uint64_t{6 << 20}, uint64_t{(12 << 20) - 1}}) {
      std::string buf(4096, 'x');
      auto n = (*r)->Read(ino, off, buf.data(), buf.size());
      ASSERT_TRUE(n.ok()) << n.status();
      ASSERT_EQ(*n, std::min<uint64_t>(4096, (12 << 20) - off));
      EXPECT_EQ(buf.substr(0, *n), l.content.substr(off, *n)) << "gzip " << gzip << " at " << off;
    }
    EXPECT_EQ(l.blob->requests(), 1u);  // one fetch, then the verified file (or cache)
    EXPECT_TRUE(WaitUntil([&] { return cache->Contains(l.chunk.digest_value()); }));
    EXPECT_EQ((*r)->Stats().chunks_fetched, 1u);
  }
}

TEST(LayerReaderTest, CorruptSpooledChunkIsNeverServedNorKept) {
  TempDir dir;
  auto cache = OpenCache(dir);
  BigChunkLayer l = MakeBigChunkLayer(6 << 20, false);
  l.blob->CorruptByte(l.chunk.compressed_length / 2);
  LayerReaderOptions o;
  o.background_fetch = false;
  o.max_chunk_in_memory = 1 << 20;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  std::string buf(10, 'x');
  auto n = (*r)->Read(*l.index->LookupPath("big"), 0, buf.data(), buf.size());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  EXPECT_EQ(buf, std::string(10, 'x'));
  EXPECT_FALSE(cache->Contains(l.chunk.digest_value()));
  EXPECT_TRUE(std::filesystem::is_empty(dir.Sub("cache") + "/tmp"));
  EXPECT_EQ((*r)->Stats().verify_errors, 1u);
}

// A cache far smaller than the layer evicts while the background fetch runs: the status says
// so truthfully (not "done", fetched % = what the cache really holds), and every file still
// reads back exactly.
TEST(LayerReaderTest, EvictionKeepsStatusTruthful) {
  TempDir dir;
  Layer l = MakeLayer(40, 50000);
  uint64_t layer_bytes = 40 * 50000;
  CacheConfig cc;
  cc.dir = dir.Sub("cache");
  cc.max_bytes = layer_bytes / 4;
  auto cache = ChunkCache::Open(cc);
  ASSERT_TRUE(cache.ok()) << cache.status();
  LayerReaderOptions o;
  o.prefetch = false;
  o.background_silence = std::chrono::milliseconds(0);
  auto r = LayerReader::Create("x", l.index, l.blob, cache->get(), o);
  ASSERT_TRUE(r.ok());
  (*r)->StartBackground();
  ASSERT_TRUE((*r)->WaitBackground(std::chrono::seconds(60)));
  LayerReaderStats s = (*r)->Stats();
  EXPECT_EQ(s.background, "incomplete");
  EXPECT_GT((*cache)->stats().evictions, 0u);
  // Local = what the cache holds now, not what was ever fetched.
  EXPECT_EQ(s.local_bytes, (*cache)->stats().bytes_stored);
  EXPECT_LT(s.fetched_percent(), 100.0);
  for (int i = 0; i < 40; ++i) ExpectFile(**r, l, i);
  EXPECT_EQ((*r)->Stats().verify_errors, 0u);
}

// One file of `chunks` zstd chunks of `chunk` bytes each.
Layer MakeChunkedFile(int chunks, size_t chunk) {
  Layer layer;
  std::string blob, content;
  std::vector<format::Chunk> list;
  for (int i = 0; i < chunks; ++i) {
    std::string part(chunk, '\0');
    for (size_t j = 0; j < chunk; ++j)
      part[j] = static_cast<char>((i * 17 + j * 3 + j / 997) % 251);
    auto frame = codec::ZstdCompress(part, 1);
    format::Chunk c;
    c.compression = format::ChunkCompression::kZstdFrame;
    c.compressed_offset = blob.size();
    c.compressed_length = frame->size();
    c.file_offset = content.size();
    c.length = chunk;
    std::string raw = Digest::Of(part).hex();
    for (int k = 0; k < 32; ++k) c.digest[k] = std::stoi(raw.substr(2 * k, 2), nullptr, 16);
    c.has_digest = true;
    list.push_back(c);
    blob += *frame;
    content += part;
  }
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  EXPECT_TRUE(b.AddRegular("f0", meta, content.size(), list).ok());
  auto index = b.Finish(Digest::Of("toc"), blob.size(), blob.size());
  layer.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  layer.blob = std::make_shared<FaultBlobReader>(NewStringBlobReader(blob));
  layer.contents.push_back(content);
  return layer;
}

TEST(LayerReaderTest, SameFileReadaheadOnlyForSequentialReaders) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeChunkedFile(16, 64 << 10);
  LayerReaderOptions o;
  o.background_fetch = false;
  o.readahead_window = 0;
  o.readahead_bytes = 128 << 10;
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  const format::Ino ino = InoOf(l, 0);
  std::string buf(4096, 'x');
  auto read_at = [&](uint64_t off) {
    auto n = (*r)->Read(ino, off, buf.data(), buf.size());
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(buf, l.contents[0].substr(off, 4096));
  };
  // Jumping around a big file (as a program's page faults do): one chunk per miss.
  for (int c : {9, 3, 13}) read_at(static_cast<uint64_t>(c) * (64 << 10) + 100);
  EXPECT_EQ((*r)->Stats().chunks_fetched, 3u);
  // Reading on where the last miss ended: the following chunks come along.
  read_at(14 * (64 << 10));
  EXPECT_TRUE(WaitUntil([&] { return (*r)->Stats().chunks_fetched == 5u; }))
      << (*r)->Stats().chunks_fetched;
  const uint64_t fetched = l.blob->requests();
  read_at(15 * (64 << 10));  // fetched by the readahead
  EXPECT_EQ(l.blob->requests(), fetched);
}

// A hostile TOC (its index built without the builder's check, as only a test can) gives one
// digest two lengths: a 4 KiB file and a 64 KiB file. While the small one's fetch is in flight
// the large one is read: it must never join that fetch and copy 64 KiB out of a 4 KiB buffer
// (heap bytes as file contents); its own bytes do not verify, so it fails.
TEST(LayerReaderTest, OneDigestAtTwoLengthsNeverServesBytesPastTheChunk) {
  TempDir dir;
  auto cache = OpenCache(dir);
  const std::string small(4096, 's');
  const std::string large(65536, 'L');
  std::string blob;
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked,
                              format::IndexBuildOptions{.check_digest_lengths = false});
  format::EntryMeta meta;
  meta.permissions = 0644;
  const std::string raw = Digest::Of(small).Raw();
  for (const std::string* content : {&small, &large}) {
    auto frame = codec::ZstdCompress(*content, 1);
    ASSERT_TRUE(frame.ok());
    format::Chunk c;
    c.compression = format::ChunkCompression::kZstdFrame;
    c.compressed_offset = blob.size();
    c.compressed_length = frame->size();
    c.length = content->size();
    std::copy(raw.begin(), raw.end(), c.digest.begin());
    c.has_digest = true;
    ASSERT_TRUE(
        b.AddRegular(content == &small ? "small" : "large", meta, content->size(), {c}).ok());
    blob += *frame;
  }
  auto index = b.Finish(Digest::Of("toc"), blob.size(), blob.size());
  ASSERT_TRUE(index.ok()) << index.status();
  auto shared_index = std::make_shared<const format::LayerIndex>(std::move(*index));
  auto fault = std::make_shared<FaultBlobReader>(NewStringBlobReader(blob));
  LayerReaderOptions o;
  o.background_fetch = false;
  o.prefetch = false;
  o.readahead_window = 0;
  o.readahead_bytes = 0;
  o.directory_batch.small_file = 0;
  auto r = LayerReader::Create("x", shared_index, fault, cache.get(), o);
  ASSERT_TRUE(r.ok());
  const format::Ino small_ino = *shared_index->LookupPath("small");
  const format::Ino large_ino = *shared_index->LookupPath("large");

  fault->SetBlocked(true);
  std::string small_buf(4096, 'x');
  absl::StatusOr<size_t> small_n;
  std::thread small_reader(
      [&] { small_n = (*r)->Read(small_ino, 0, small_buf.data(), small_buf.size()); });
  fault->WaitBlocked(1);
  std::string large_buf(65536, 'x');
  absl::StatusOr<size_t> large_n;
  std::thread large_reader(
      [&] { large_n = (*r)->Read(large_ino, 0, large_buf.data(), large_buf.size()); });
  // Both reads have missed (and claimed or joined a fetch) before any byte arrives.
  ASSERT_TRUE(WaitUntil([&] { return (*r)->Stats().cache_misses == 2; }));
  fault->SetBlocked(false);
  small_reader.join();
  large_reader.join();
  ASSERT_TRUE(small_n.ok()) << small_n.status();
  EXPECT_EQ(small_buf, small);
  EXPECT_EQ(large_n.status().code(), absl::StatusCode::kDataLoss) << large_n.status();
  EXPECT_EQ(large_buf, std::string(65536, 'x'));
  EXPECT_EQ((*r)->Stats().fetch_waits, 0u);
  EXPECT_EQ(fault->requests(), 2u);

  // With the small one in the cache, the large one still never reads past it.
  ASSERT_TRUE(WaitUntil([&] { return cache->Contains(Digest::Of(small)); }));
  large_n = (*r)->Read(large_ino, 0, large_buf.data(), large_buf.size());
  EXPECT_EQ(large_n.status().code(), absl::StatusCode::kDataLoss) << large_n.status();
}

// VmHWM - VmRSS growth over `fn`, after resetting the peak (clear_refs 5).
int64_t PeakRssGrowth(const std::function<void()>& fn) {
  auto status_kb = [](std::string_view field) -> int64_t {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with(field)) return std::stoll(line.substr(field.size()));
    }
    return -1;
  };
  std::ofstream("/proc/self/clear_refs") << "5";
  const int64_t before = status_kb("VmRSS:");
  fn();
  return (status_kb("VmHWM:") - before) * 1024;
}

// eStargz lets entries share a gzip member (innerOffset). A member inflating to 128 MiB with a
// file at its end must not be inflated into memory to serve that file: it streams.
TEST(LayerReaderTest, HugeInnerOffsetInASharedMemberStreamsInBoundedMemory) {
  TempDir dir;
  auto cache = OpenCache(dir);
  constexpr uint64_t kMember = 128 << 20;
  std::string tail(4096, '\0');
  for (size_t j = 0; j < tail.size(); ++j) tail[j] = static_cast<char>(j * 7 % 251);
  std::string compressed;
  {
    std::string member(kMember, '\0');
    // Not quite all zeros, so the member sits safely below deflate's largest ratio.
    for (uint64_t j = 0; j < kMember; j += 1 << 20) member[j] = static_cast<char>(j >> 20 | 1);
    member.replace(kMember - tail.size(), tail.size(), tail);
    auto gz = codec::GzipCompress(member, 9);
    ASSERT_TRUE(gz.ok());
    compressed = std::move(*gz);
  }
  format::LayerIndexBuilder b(format::LayerFormat::kEstargz, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  std::string head(4096, '\0');
  head[0] = 1;
  for (const auto& [name, inner, content] :
       {std::tuple<std::string, uint64_t, const std::string*>{"head", 0, &head},
        {"tail", kMember - tail.size(), &tail}}) {
    format::Chunk c;
    c.compression = format::ChunkCompression::kGzipMember;
    c.compressed_offset = 0;
    c.compressed_length = compressed.size();
    c.inner_offset = inner;
    c.length = content->size();
    const std::string raw = Digest::Of(*content).Raw();
    std::copy(raw.begin(), raw.end(), c.digest.begin());
    c.has_digest = true;
    ASSERT_TRUE(b.AddRegular(name, meta, content->size(), {c}).ok());
  }
  auto index = b.Finish(Digest::Of("toc"), compressed.size(), compressed.size());
  ASSERT_TRUE(index.ok()) << index.status();
  auto shared_index = std::make_shared<const format::LayerIndex>(std::move(*index));
  auto blob = std::make_shared<FaultBlobReader>(NewStringBlobReader(compressed));
  LayerReaderOptions o;  // default memory budget
  o.background_fetch = false;
  o.prefetch = false;
  auto r = LayerReader::Create("x", shared_index, blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  std::string buf(4096, 'x');
  const int64_t growth = PeakRssGrowth([&] {
    auto n = (*r)->Read(*shared_index->LookupPath("tail"), 0, buf.data(), buf.size());
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(buf, tail);
    n = (*r)->Read(*shared_index->LookupPath("head"), 0, buf.data(), buf.size());
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(buf, head);
  });
  EXPECT_LT(growth, 64 << 20);
}

// Directory batches: a cold miss on a small file also fetches its nearest siblings (same
// extension first) in the same request, up to the batch budget; files elsewhere, large files
// and siblings past the budget are left for their own reads.
TEST(LayerReaderTest, MissOnASmallFileFetchesItsDirectorySiblingsWithinTheBudget) {
  TempDir dir;
  auto cache = OpenCache(dir);
  std::string blob;
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  std::map<std::string, std::string> contents;
  std::mt19937 rng(7);
  auto add = [&](const std::string& path, size_t size) {
    std::string content(size, '\0');
    for (char& ch : content) ch = static_cast<char>(rng());
    auto frame = codec::ZstdCompress(content, 1);
    ASSERT_TRUE(frame.ok());
    format::Chunk c;
    c.compression = format::ChunkCompression::kZstdFrame;
    c.compressed_offset = blob.size();
    c.compressed_length = frame->size();
    c.length = size;
    const std::string raw = Digest::Of(content).Raw();
    std::copy(raw.begin(), raw.end(), c.digest.begin());
    c.has_digest = true;
    ASSERT_TRUE(b.AddRegular(path, meta, size, {c}).ok());
    blob += *frame;
    contents[path] = content;
  };
  for (char n = 'a'; n <= 'j'; ++n) add(std::string("pkg/") + n + ".pyc", 8000);
  add("pkg/e.txt", 8000);      // same directory, other extension: after the .pyc files
  add("pkg/f2.bin", 1 << 20);  // not small
  add("other/d.pyc", 8000);    // another directory
  auto built = b.Finish(Digest::Of("toc"), blob.size(), blob.size());
  ASSERT_TRUE(built.ok()) << built.status();
  auto index = std::make_shared<const format::LayerIndex>(std::move(*built));
  auto fault = std::make_shared<FaultBlobReader>(NewStringBlobReader(blob));
  LayerReaderOptions o;
  o.background_fetch = false;
  o.prefetch = false;
  o.readahead_window = 0;  // only the batch brings neighbours
  o.directory_batch.initial_budget = 4 * 8000;
  o.directory_batch.min_budget = 8 << 10;
  auto r = LayerReader::Create("x", index, fault, cache.get(), o);
  ASSERT_TRUE(r.ok());
  std::string buf(8000, 'x');
  auto read = [&](const std::string& path) {
    auto n = (*r)->Read(*index->LookupPath(path), 0, buf.data(), buf.size());
    ASSERT_TRUE(n.ok()) << path << ": " << n.status();
    EXPECT_EQ(buf.substr(0, *n), contents[path].substr(0, *n)) << path;
  };
  // A directory's first miss fetches the file alone.
  read("pkg/e.pyc");
  EXPECT_EQ(fault->requests(), 1u);
  EXPECT_EQ((*r)->Stats().batch_chunks, 0u);
  // Its second brings the nearest siblings, alternating after and before, .pyc first, until
  // the 32 000-byte budget is spent (zstd adds a few bytes to each file): one range (e.pyc,
  // local already, is a small gap fetched and dropped).
  read("pkg/d.pyc");
  EXPECT_EQ(fault->requests(), 2u);
  EXPECT_EQ((*r)->Stats().batch_chunks, 4u);
  for (const char* path : {"pkg/c.pyc", "pkg/b.pyc", "pkg/f.pyc", "pkg/a.pyc"}) {
    read(path);
    EXPECT_EQ(fault->requests(), 2u) << path;
  }
  EXPECT_EQ((*r)->Stats().batch_used, 4u);
  // Past the budget: its own miss, and a batch twice as large (the last one was all read).
  read("pkg/h.pyc");
  EXPECT_EQ(fault->requests(), 3u);
  EXPECT_EQ((*r)->Stats().batch_budget, 8u * 8000);
  EXPECT_EQ((*r)->Stats().batch_chunks, 4u + 4u);  // i, g, j (.pyc first), then e.txt
  for (const char* path : {"pkg/i.pyc", "pkg/g.pyc", "pkg/j.pyc", "pkg/e.txt"}) {
    read(path);
    EXPECT_EQ(fault->requests(), 3u) << path;
  }
  EXPECT_EQ((*r)->Stats().batch_used, 8u);
  // Another directory's first miss: no batch.
  read("other/d.pyc");
  EXPECT_EQ(fault->requests(), 4u);
  EXPECT_EQ((*r)->Stats().batch_chunks, 8u);
}

}  // namespace
}  // namespace lazypull
