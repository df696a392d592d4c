// Small lazy layers for LayerReader tests: `files` files of `size` bytes, one zstd frame each,
// back to back in an in-memory blob behind a FaultBlobReader; a real ChunkCache in a TempDir.
#ifndef LAZYPULL_TESTS_FUSE_TEST_LAYER_H_
#define LAZYPULL_TESTS_FUSE_TEST_LAYER_H_

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "fetcher/cache/chunk_cache.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/layer_index_builder.h"
#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "tests/fuse/fault_blob_reader.h"
#include "tests/harness/test_env.h"

namespace lazypull {

struct Layer {
  std::shared_ptr<const format::LayerIndex> index;
  std::shared_ptr<testing::FaultBlobReader> blob;
  std::vector<std::string> contents;  // file i is "f<i>"
};

// `files` files of `size` bytes, one zstd frame each, laid out back to back; files "f<i>".
inline Layer MakeLayer(int files, size_t size, bool digests = true) {
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
    // Distinct files (the cache is content-addressed: equal files would share one chunk).
    std::string tag = "f" + std::to_string(i) + ":";
    content.replace(0, std::min(tag.size(), size), tag.substr(0, size));
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
  layer.blob = std::make_shared<testing::FaultBlobReader>(NewStringBlobReader(blob));
  return layer;
}

inline std::unique_ptr<ChunkCache> OpenCache(const testing::TempDir& dir) {
  CacheConfig cc;
  cc.dir = dir.Sub("cache");
  auto cache = ChunkCache::Open(cc);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(*cache);
}

inline format::Ino InoOf(const Layer& l, int i) {
  return *l.index->LookupPath("f" + std::to_string(i));
}

}  // namespace lazypull

#endif  // LAZYPULL_TESTS_FUSE_TEST_LAYER_H_
