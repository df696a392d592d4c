// LayerReader without FUSE (label unit): zstd-frame chunks in an in-memory blob, indexes built
// with LayerIndexBuilder, a real ChunkCache in a TempDir.
#include "fetcher/layer_reader/layer_reader.h"

#include <chrono>
#include <string>
#include <vector>

#include "fetcher/codec/zstd.h"
#include "fetcher/format/layer_index_builder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fuse/fault_blob_reader.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using ::lazypull::testing::FaultBlobReader;
using ::lazypull::testing::TempDir;

struct Layer {
  std::shared_ptr<const format::LayerIndex> index;
  std::shared_ptr<FaultBlobReader> blob;
  std::vector<std::string> contents;  // file i is "f<i>"
};

// `files` files of `size` bytes, one zstd frame each, laid out back to back.
Layer MakeLayer(int files, size_t size, bool digests = true) {
  Layer layer;
  std::string blob;
  format::IndexBuildOptions opts;
  opts.allow_missing_digests = !digests;
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked, opts);
  format::EntryMeta meta;
  meta.permissions = 0644;
  for (int i = 0; i < files; ++i) {
    std::string content(size, '\0');
    for (size_t j = 0; j < size; ++j) content[j] = static_cast<char>((i * 31 + j * 7) % 251);
    auto frame = codec::ZstdCompress(content, 1);
    EXPECT_TRUE(frame.ok());
    format::Chunk c;
    c.compression = format::ChunkCompression::kZstdFrame;
    c.compressed_offset = blob.size();
    c.compressed_length = frame->size();
    c.length = size;
    if (digests) {
      std::string raw = Digest::Of(content).hex();
      for (int k = 0; k < 32; ++k) c.digest[k] = std::stoi(raw.substr(2 * k, 2), nullptr, 16);
      c.has_digest = true;
    }
    EXPECT_TRUE(b.AddRegular("f" + std::to_string(i), meta, size, {c}).ok());
    blob += *frame;
    layer.contents.push_back(content);
  }
  auto index = b.Finish(Digest::Of("toc"), blob.size(), blob.size());
  EXPECT_TRUE(index.ok()) << index.status();
  layer.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  layer.blob = std::make_shared<FaultBlobReader>(NewStringBlobReader(blob));
  return layer;
}

std::unique_ptr<ChunkCache> OpenCache(const TempDir& dir) {
  CacheConfig cc;
  cc.dir = dir.Sub("cache");
  auto cache = ChunkCache::Open(cc);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(*cache);
}

format::Ino InoOf(const Layer& l, int i) { return *l.index->LookupPath("f" + std::to_string(i)); }

TEST(LayerReaderTest, RejectsBadOptions) {
  TempDir dir;
  auto cache = OpenCache(dir);
  Layer l = MakeLayer(1, 100);
  LayerReaderOptions o;
  o.background_concurrency = 0;
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
  o.background_request_bytes = total / 8 + 1;
  o.background_bandwidth = total * 2;  // bytes per second: ~0.5 s for the whole layer
  o.background_concurrency = 1;
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
  o.background_request_bytes = 1;     // one chunk per request
  o.background_bandwidth = 20 << 10;  // ~1 s per chunk: would take a minute
  auto r = LayerReader::Create("x", l.index, l.blob, cache.get(), o);
  ASSERT_TRUE(r.ok());
  (*r)->StartBackground();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto start = std::chrono::steady_clock::now();
  r->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_LT(l.blob->requests(), 50u);
}

}  // namespace
}  // namespace lazypull
