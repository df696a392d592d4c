// IndexRangeReader / OpenLayerIndexKeepingBytes: a layer index re-opened after a restart comes
// from the bytes kept on disk (no blob read), and damaged kept bytes never reach the index.
#include "server/remote/index_ranges.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "fetcher/oci/media_types.h"
#include "tests/format/test_blob_builder.h"

namespace lazypull::remote {
namespace {

// Counts the reads that reach the blob (the registry in the daemon).
class CountingReader : public BlobReader {
 public:
  explicit CountingReader(std::string data) : inner_(NewStringBlobReader(std::move(data))) {}
  uint64_t Size() const override { return inner_->Size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    ++reads;
    return inner_->ReadAt(offset, length);
  }
  std::atomic<int> reads{0};

 private:
  std::unique_ptr<BlobReader> inner_;
};

class IndexRangesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/index-ranges-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    format::testing::TestEntry file;
    file.name = "a.txt";
    file.data = std::string(5000, 'a');
    format::testing::TestEntry dir;
    dir.name = "b";
    dir.type = '5';
    built_ = format::testing::BuildEstargz({file, dir});
    layer_.media_type = std::string(oci::kOciLayerGzip);
    layer_.digest = Digest::Of(built_.blob);
    layer_.size = static_cast<int64_t>(built_.blob.size());
    layer_.annotations = built_.annotations;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  format::testing::BuiltBlob built_;
  oci::Descriptor layer_;
};

TEST_F(IndexRangesTest, SecondOpenReadsNothingFromTheBlob) {
  auto first = std::make_shared<CountingReader>(built_.blob);
  absl::StatusOr<format::LayerIndex> a = OpenLayerIndexKeepingBytes(first, layer_, dir_);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GT(first->reads.load(), 0);
  ASSERT_TRUE(std::filesystem::exists(dir_ + "/" + layer_.digest.hex()));

  auto second = std::make_shared<CountingReader>(built_.blob);
  absl::StatusOr<format::LayerIndex> b = OpenLayerIndexKeepingBytes(second, layer_, dir_);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(second->reads.load(), 0);
  EXPECT_EQ(b->inode_count(), a->inode_count());
  EXPECT_EQ(b->chunk_count(), a->chunk_count());
}

TEST_F(IndexRangesTest, DamagedKeptBytesAreReplacedFromTheBlob) {
  auto first = std::make_shared<CountingReader>(built_.blob);
  ASSERT_TRUE(OpenLayerIndexKeepingBytes(first, layer_, dir_).ok());
  const std::string path = dir_ + "/" + layer_.digest.hex();
  {  // flip the last byte (inside the TOC member or the footer)
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);
    char c = 0;
    f.get(c);
    f.seekp(-1, std::ios::end);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  auto second = std::make_shared<CountingReader>(built_.blob);
  absl::StatusOr<format::LayerIndex> b = OpenLayerIndexKeepingBytes(second, layer_, dir_);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_GT(second->reads.load(), 0);  // fetched again, not served from the damaged file

  auto third = std::make_shared<CountingReader>(built_.blob);
  ASSERT_TRUE(OpenLayerIndexKeepingBytes(third, layer_, dir_).ok());
  EXPECT_EQ(third->reads.load(), 0);  // the rewritten file is whole again
}

TEST_F(IndexRangesTest, MalformedFileIsIgnored) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ + "/" + layer_.digest.hex()) << "lazypull-index-ranges-v1\nshort";
  auto blob = std::make_shared<CountingReader>(built_.blob);
  absl::StatusOr<format::LayerIndex> index = OpenLayerIndexKeepingBytes(blob, layer_, dir_);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_GT(blob->reads.load(), 0);
}

TEST_F(IndexRangesTest, DropKeepsOnlyUsedLayers) {
  auto blob = std::make_shared<CountingReader>(built_.blob);
  ASSERT_TRUE(OpenLayerIndexKeepingBytes(blob, layer_, dir_).ok());
  const std::string other = dir_ + "/" + std::string(64, 'e');
  std::ofstream(other) << "x";
  DropIndexBytesExcept(dir_, {layer_.digest.ToString()});
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + layer_.digest.hex()));
  EXPECT_FALSE(std::filesystem::exists(other));
  DropIndexBytesExcept(dir_, {});
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/" + layer_.digest.hex()));
}

}  // namespace
}  // namespace lazypull::remote
