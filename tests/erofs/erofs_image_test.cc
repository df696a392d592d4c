// EROFS image writer (unit): real eStargz / zstd:chunked blobs indexed by the real readers,
// written as lazy-blob images (4 KiB and 512-byte blocks) and tar images (512-byte blocks),
// then read back by CheckErofsImage and compared with the index byte for byte; every 4 KiB
// image also goes through Debian's fsck.erofs (with extraction of every file).
#include <sys/stat.h>

#include <string>
#include <tuple>

#include "absl/strings/str_join.h"
#include "fetcher/format/layer_index_builder.h"
#include "gtest/gtest.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/erofs_format.h"
#include "mount/erofs/image_checker.h"
#include "mount/erofs/image_writer.h"
#include "tests/erofs/erofs_test_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::erofs_testing {
namespace {

using mount::erofs::BlobLayout;
using mount::erofs::BuildErofsImage;
using mount::erofs::CheckErofsImage;
using mount::erofs::ImageStats;
using testing::RunCommand;
using testing::TempDir;
using testing::WriteFile;

class ErofsImageTest : public ::testing::TestWithParam<std::tuple<bool, uint32_t>> {
 protected:
  bool zstd() const { return std::get<0>(GetParam()); }
  uint32_t block_bits() const { return std::get<1>(GetParam()); }
};

TEST_P(ErofsImageTest, LazyBlobImageReadsBackExactly) {
  auto layer = MakeTestLayer(RichEntries(), zstd());
  ASSERT_TRUE(layer.ok()) << layer.status();
  auto layout = mount::erofs::PlanBlobLayout(*layer->index, block_bits());
  ASSERT_TRUE(layout.ok()) << layout.status();
  ImageStats stats;
  auto image = BuildErofsImage(*layer->index, layout->device, {.device_tag = "blob"}, &stats);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(stats.inodes, layer->index->inode_count());
  EXPECT_GT(stats.compact_inodes, 0u);
  EXPECT_GT(stats.extended_inodes, 0u);  // uid 100000, nanosecond mtimes
  EXPECT_GT(stats.shared_xattrs, 0u);    // user.color=blue is on three inodes
  EXPECT_EQ(stats.dropped_xattrs, 0u);
  auto checked = CheckErofsImage(*image);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->block_bits, block_bits());
  EXPECT_EQ(checked->device_tag, "blob");
  EXPECT_EQ(checked->device_blocks, layout->device.device_blocks);
  auto blob = MaterializeBlob(*layer, *layout);
  ASSERT_TRUE(blob.ok()) << blob.status();
  std::vector<std::string> diffs = CompareImageWithIndex(*checked, *layer, layout->device, *blob);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");

  // The overlay view: whiteout as char 0:0, the opaque directory's xattrs.
  const auto& gone = checked->files.at("gone/deleted");
  EXPECT_EQ(gone.mode, S_IFCHR);
  EXPECT_EQ(gone.rdev_major, 0u);
  EXPECT_EQ(gone.rdev_minor, 0u);
  EXPECT_EQ(checked->files.at("opq").xattrs.at("trusted.overlay.opaque"), "y");
  // A hardlink is one inode; holes of zstd:chunked files are null chunks.
  EXPECT_EQ(checked->files.at("etc/hardlink").nid, checked->files.at("bin-data").nid);
  EXPECT_EQ(checked->files.at("bin-data").nlink, 2u);
  const auto& sparse = checked->files.at("sparse.bin");
  size_t holes = 0;
  for (uint32_t b : sparse.chunk_blocks) holes += b == mount::erofs::kNullBlock;
  EXPECT_EQ(holes > 0, zstd()) << "chunks: " << sparse.chunk_blocks.size();
  EXPECT_TRUE(checked->files.at("owned").extended);
}

INSTANTIATE_TEST_SUITE_P(FormatsAndBlockSizes, ErofsImageTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(12u, 9u)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "ZstdChunked" : "Estargz") +
                                  (std::get<1>(info.param) == 12 ? "4K" : "512");
                         });

// Per layer format.
class ErofsFormatTest : public ::testing::TestWithParam<bool> {
 protected:
  bool zstd() const { return GetParam(); }
};

// Tar images always use 512-byte blocks (tar payloads are 512-aligned).
TEST_P(ErofsFormatTest, TarImagePointsIntoTheOriginalTar) {
  auto layer = MakeTestLayer(RichEntries(), zstd());
  ASSERT_TRUE(layer.ok()) << layer.status();
  auto offsets = TarPayloadOffsets(*layer);
  ASSERT_TRUE(offsets.ok()) << offsets.status();
  auto device = mount::erofs::PlanTarLayout(*layer->index, *offsets, layer->built.tar.size());
  ASSERT_TRUE(device.ok()) << device.status();
  auto image = BuildErofsImage(*layer->index, *device, {.device_tag = "layer.tar"});
  ASSERT_TRUE(image.ok()) << image.status();
  auto checked = CheckErofsImage(*image);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->block_bits, 9u);
  std::vector<std::string> diffs =
      CompareImageWithIndex(*checked, *layer, *device, layer->built.tar);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

// Debian's fsck.erofs 1.5 only knows 4 KiB blocks (512-byte images are covered by
// CheckErofsImage and the kernel mount tests).
TEST_P(ErofsFormatTest, FsckErofsAcceptsAndExtractsTheImage) {
  auto layer = MakeTestLayer(RichEntries(), zstd());
  ASSERT_TRUE(layer.ok()) << layer.status();
  auto layout = mount::erofs::PlanBlobLayout(*layer->index, 12);
  ASSERT_TRUE(layout.ok());
  TempDir tmp("erofsimg");
  ASSERT_TRUE(
      mount::erofs::WriteErofsImage(*layer->index, layout->device, {}, tmp.Sub("meta.img")).ok());
  auto blob = MaterializeBlob(*layer, *layout);
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(WriteFile(tmp.Sub("blob"), *blob).ok());
  auto fsck = RunCommand({"fsck.erofs", "--device=" + tmp.Sub("blob"),
                          "--extract=" + tmp.Sub("out"), tmp.Sub("meta.img")},
                         std::chrono::seconds(60));
  ASSERT_TRUE(fsck.ok()) << fsck.status();
  EXPECT_EQ(fsck->exit_code, 0) << fsck->output;
  // fsck's extraction read every chunk through the device: spot-check the contents. (fsck 1.5
  // extracts hole chunks by skipping them without seeking, so sparse.bin is checked by the
  // kernel mount tests instead.)
  for (const char* path : {"etc/hello", "bin-data", "many/f399-"}) {
    std::string p = path;
    if (p == "many/f399-") p += std::string(399 % 50, 'n');
    auto ino = layer->index->LookupPath(p);
    ASSERT_TRUE(ino.has_value()) << p;
    auto want = FileContent(*layer, *ino);
    auto got = testing::ReadFile(tmp.Sub("out/" + p));
    ASSERT_TRUE(got.ok()) << p << ": " << got.status() << "\n" << fsck->output;
    EXPECT_TRUE(*got == *want) << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, ErofsFormatTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "ZstdChunked" : "Estargz");
});

TEST(ErofsImage, ChunkPolicy) {
  auto layer = MakeTestLayer(RichEntries(), /*zstd_chunked=*/true);
  ASSERT_TRUE(layer.ok()) << layer.status();
  const auto& index = *layer->index;
  // No holes: one chunk covering the file.
  EXPECT_EQ(mount::erofs::ChooseChunkBits(index, *index.LookupPath("bin-data"), 12), 18u);
  EXPECT_EQ(mount::erofs::ChooseChunkBits(index, *index.LookupPath("etc/hello"), 12), 12u);
  EXPECT_EQ(mount::erofs::ChooseChunkBits(index, *index.LookupPath("etc/hello"), 9), 9u);
  // Holes: block-sized chunks, so the hole is null.
  EXPECT_EQ(mount::erofs::ChooseChunkBits(index, *index.LookupPath("sparse.bin"), 12), 12u);
  EXPECT_EQ(mount::erofs::ChooseChunkBits(index, *index.LookupPath("etc"), 12), 0u);
  auto layout = mount::erofs::PlanBlobLayout(index, 12);
  ASSERT_TRUE(layout.ok());
  // The blob holds no hole bytes: 64 KiB + 64 KiB of sparse.bin's data.
  uint64_t sparse_bytes = 0;
  for (const auto& e : layout->extents) {
    if (e.ino == *index.LookupPath("sparse.bin")) sparse_bytes += e.length;
  }
  EXPECT_EQ(sparse_bytes, 128u << 10);
  auto found = layout->Find(layout->extents[1].offset, 1);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].ino, layout->extents[1].ino);
}

// A declared size costs a TOC nothing: a 2^62-byte sparse file (one zeros chunk and 4 KiB of
// data) or a 2^62-byte file claimed by one frame must not make the layout reserve 2^36 chunk
// indexes. Chunks grow instead, up to what EROFS can express; past that, the layer is refused.
TEST(ErofsImage, HugeDeclaredSizesAreBoundedNotAllocated) {
  constexpr uint64_t kHuge = uint64_t{1} << 62;
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  format::Chunk hole;
  hole.compression = format::ChunkCompression::kZeros;
  hole.length = kHuge - 4096;
  hole.has_digest = true;
  format::Chunk tail;
  tail.compression = format::ChunkCompression::kZstdFrame;
  tail.compressed_offset = 0;
  tail.compressed_length = 100;
  tail.file_offset = kHuge - 4096;
  tail.length = 4096;
  tail.has_digest = true;
  ASSERT_TRUE(b.AddRegular("sparse", meta, kHuge, {hole, tail}).ok());
  format::Chunk whole;
  whole.compression = format::ChunkCompression::kZstdFrame;
  whole.compressed_offset = 100;
  whole.compressed_length = kHuge / 32768;
  whole.length = kHuge;
  whole.has_digest = true;
  whole.digest[0] = 1;
  ASSERT_TRUE(b.AddRegular("dense", meta, kHuge, {whole}).ok());
  auto index = b.Finish(Digest(), kHuge, kHuge);
  ASSERT_TRUE(index.ok()) << index.status();
  for (const char* name : {"sparse", "dense"}) {
    EXPECT_EQ(mount::erofs::ChooseChunkBits(*index, *index->LookupPath(name), 12), 42u) << name;
  }
  auto layout = mount::erofs::PlanBlobLayout(*index, 12);
  // 4 KiB blocks: 2^20 chunks of 2^42 bytes each, but the dense file's 2^62 bytes do not fit a
  // device of 2^32 blocks.
  ASSERT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument) << layout.status();
  EXPECT_EQ(layout.status().message(), "layer data does not fit 2^32 blocks of 4096 bytes");
  // 512-byte blocks: chunks stop at 2^40 bytes, so 2^22 indexes would be needed.
  auto small_blocks = mount::erofs::PlanBlobLayout(*index, 9);
  ASSERT_EQ(small_blocks.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(small_blocks.status().message(),
            "file sparse declares 4611686018427387904 bytes: more than EROFS chunk indexes can "
            "map in 1048576 entries");
}

}  // namespace
}  // namespace lazypull::erofs_testing
