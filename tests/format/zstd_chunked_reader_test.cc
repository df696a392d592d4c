#include "fetcher/format/zstd_chunked_reader.h"

#include <sys/stat.h>

#include "fetcher/codec/zstd.h"
#include "fetcher/format/chunk_decoder.h"
#include "fetcher/format/format_detector.h"
#include "gtest/gtest.h"
#include "tests/format/test_blob_builder.h"

namespace lazypull::format {
namespace {

using testing::BuildZstdChunked;
using testing::BuiltBlob;
using testing::ReadFileBytes;
using testing::TestEntry;

std::vector<TestEntry> Entries() {
  std::string sparse = std::string(100, 'a') + std::string(200000, '\0') + "tail";
  std::vector<TestEntry> e;
  e.push_back({.name = "./", .type = '5', .mode = 0755});
  e.push_back({.name = "./usr/lib/libx.so",
               .type = '0',
               .data = std::string(150000, 'L'),
               .mode = 0755,
               .modtime = "2023-11-14T22:13:20.123456789Z"});
  e.push_back({.name = "./usr/lib/sparse", .type = '0', .data = sparse});
  e.push_back({.name = "./usr/lib/small",
               .type = '0',
               .data = "small\n",
               .xattrs = {{"security.capability", std::string("\x01\x02\x00", 3)}}});
  e.push_back({.name = "./usr/lib/hard", .type = '1', .link = "usr/lib/small"});
  e.push_back({.name = "./usr/lib/.wh.old", .type = '0'});
  e.push_back({.name = "./dev/tty", .type = '3', .dev_major = 5, .dev_minor = 0});
  return e;
}

void CheckIndex(const BuiltBlob& b, const LayerIndex& index) {
  auto reader = NewStringBlobReader(b.blob);
  EXPECT_EQ(index.format(), LayerFormat::kZstdChunked);
  EXPECT_EQ(index.toc_digest(), b.toc_digest);
  Ino lib = *index.LookupPath("usr/lib/libx.so");
  EXPECT_EQ(index.GetAttr(lib)->mtime_nsec, 123456789u);
  EXPECT_EQ(index.GetAttr(lib)->mtime_sec, 1700000000);
  EXPECT_EQ(index.Chunks(lib).size(), 3u);
  EXPECT_EQ(*ReadFileBytes(index, *reader, lib), std::string(150000, 'L'));
  Ino sparse = *index.LookupPath("usr/lib/sparse");
  bool has_zeros = false;
  for (const Chunk& c : index.Chunks(sparse))
    has_zeros |= c.compression == ChunkCompression::kZeros;
  EXPECT_TRUE(has_zeros);
  EXPECT_EQ(*ReadFileBytes(index, *reader, sparse),
            std::string(100, 'a') + std::string(200000, '\0') + "tail");
  Ino small = *index.LookupPath("usr/lib/small");
  EXPECT_EQ(*ReadFileBytes(index, *reader, small), "small\n");
  EXPECT_EQ(*index.LookupPath("usr/lib/hard"), small);
  EXPECT_EQ(index.GetAttr(small)->nlink, 2u);
  EXPECT_EQ(*index.GetXattr(small, "security.capability"), std::string("\x01\x02\x00", 3));
  EXPECT_EQ(index.GetAttr(*index.LookupPath("usr/lib/old"))->flags, kWhiteout);
  EXPECT_EQ(index.GetAttr(*index.LookupPath("dev/tty"))->dev_major, 5u);
}

TEST(ZstdChunkedReaderTest, CurrentVariantFromAnnotationsAndFooter) {
  BuiltBlob b = BuildZstdChunked(Entries());
  // Still a plain zstd stream of the original tar.
  EXPECT_EQ(*codec::ZstdDecompress(b.blob, {.max_output = 1 << 24}), b.tar);
  auto reader = NewStringBlobReader(b.blob);
  auto index = ReadZstdChunkedIndex(*reader, b.annotations);
  ASSERT_TRUE(index.ok()) << index.status();
  CheckIndex(b, *index);
  auto loc = ZstdChunkedLocationFromAnnotations(b.annotations);
  ASSERT_TRUE(loc.ok());
  EXPECT_FALSE(loc->legacy);
  EXPECT_GT(loc->tar_split_offset, 0u);
  auto footer = ParseZstdChunkedFooter(b.blob.substr(b.blob.size() - 72), b.blob.size());
  ASSERT_TRUE(footer.ok()) << footer.status();
  EXPECT_EQ(footer->manifest_offset, loc->manifest_offset);
  EXPECT_EQ(footer->tar_split_offset, loc->tar_split_offset);
  // Footer fallback: position from the footer, checksum still required.
  std::map<std::string, std::string> only_checksum = {
      {std::string(kZstdChunkedManifestChecksumKey), b.toc_digest.ToString()}};
  auto from_footer = ReadZstdChunkedIndex(*reader, only_checksum);
  ASSERT_TRUE(from_footer.ok()) << from_footer.status();
  CheckIndex(b, *from_footer);
  EXPECT_EQ(ReadZstdChunkedIndex(*reader, {}).status().code(), absl::StatusCode::kInvalidArgument);
  FormatReadOptions allow;
  allow.build.allow_missing_digests = true;
  EXPECT_TRUE(ReadZstdChunkedIndex(*reader, {}, allow).ok());
}

TEST(ZstdChunkedReaderTest, LegacyVariant) {
  BuiltBlob b = BuildZstdChunked(Entries(), {.legacy = true});
  auto reader = NewStringBlobReader(b.blob);
  auto index = ReadZstdChunkedIndex(*reader, b.annotations);
  ASSERT_TRUE(index.ok()) << index.status();
  CheckIndex(b, *index);
  auto footer = ParseZstdChunkedFooter(b.blob.substr(b.blob.size() - 72), b.blob.size());
  ASSERT_TRUE(footer.ok()) << footer.status();
  EXPECT_TRUE(footer->legacy);
  const std::string zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
  EXPECT_EQ(*DetectLayerFormat(zstd, b.annotations, nullptr), LayerFormat::kZstdChunked);
  EXPECT_EQ(*DetectLayerFormat(zstd, {}, reader.get()), LayerFormat::kZstdChunked);
  auto plain = NewStringBlobReader(*codec::ZstdCompress("plain"));
  EXPECT_EQ(DetectLayerFormat(zstd, {}, plain.get()).status().code(), absl::StatusCode::kNotFound);
  auto opened = OpenLayerIndex(*reader, zstd, b.annotations);
  ASSERT_TRUE(opened.ok()) << opened.status();
}

TEST(ZstdChunkedReaderTest, ChecksumAndPositionErrors) {
  BuiltBlob b = BuildZstdChunked(Entries());
  auto reader = NewStringBlobReader(b.blob);
  auto ann = b.annotations;
  ann[std::string(kZstdChunkedManifestChecksumKey)] = Digest::Of("x").ToString();
  EXPECT_EQ(ReadZstdChunkedIndex(*reader, ann).status().code(), absl::StatusCode::kDataLoss);
  for (const char* pos :
       {"1:2:3", "a:b:c:d", "99999999:10:10:1", "10:99999999:10:1", "0:10:10:1", "8:10:10:2"}) {
    ann = b.annotations;
    ann[std::string(kZstdChunkedManifestPositionKey)] = pos;
    auto st = ReadZstdChunkedIndex(*reader, ann).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << pos << " " << st;
  }
  // TOC bomb: the position claims a huge uncompressed size.
  ann = b.annotations;
  auto loc = *ZstdChunkedLocationFromAnnotations(ann);
  ann[std::string(kZstdChunkedManifestPositionKey)] = std::to_string(loc.manifest_offset) + ":" +
                                                      std::to_string(loc.manifest_length) + ":" +
                                                      std::to_string(1ull << 40) + ":1";
  EXPECT_EQ(ReadZstdChunkedIndex(*reader, ann).status().code(), absl::StatusCode::kInvalidArgument);
  // Truncated blob: the footer is gone, the annotations point past the end.
  auto cut = NewStringBlobReader(b.blob.substr(0, loc.manifest_offset + 5));
  EXPECT_EQ(ReadZstdChunkedIndex(*cut, b.annotations).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadZstdChunkedIndex(*cut, {}).status().code(), absl::StatusCode::kNotFound);
}

TEST(ZstdChunkedReaderTest, BadManifestEntries) {
  auto expect_invalid = [](std::function<void(nlohmann::json&)> mutate, const char* what) {
    BuiltBlob b = BuildZstdChunked(Entries(), {.mutate_toc = mutate});
    auto reader = NewStringBlobReader(b.blob);
    auto st = ReadZstdChunkedIndex(*reader, b.annotations).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
  };
  expect_invalid([](nlohmann::json& t) { t["entries"][2]["chunkType"] = "holes"; }, "chunkType");
  expect_invalid([](nlohmann::json& t) { t["entries"][2]["offset"] = 3; }, "frame order");
  expect_invalid([](nlohmann::json& t) { t["entries"][2]["name"] = "other"; }, "chunk name");
  expect_invalid([](nlohmann::json& t) { t["entries"][1]["endOffset"] = 1ull << 50; }, "past EOF");
  expect_invalid([](nlohmann::json& t) { t["entries"][1]["name"] = "a/../../x"; }, "dotdot");
  expect_invalid(
      [](nlohmann::json& t) {
        t["entries"].push_back({{"type", "hardlink"}, {"name", "h"}, {"linkName", "none"}});
      },
      "hardlink");
}

TEST(ZstdChunkedReaderTest, WithoutEndOffsetFramesEndAtTheNextFrame) {
  // stargz-snapshotter's zstd:chunked writer records no endOffset.
  BuiltBlob b = BuildZstdChunked(Entries(), {.mutate_toc = [](nlohmann::json& t) {
                                   for (auto& e : t["entries"]) e.erase("endOffset");
                                 }});
  auto reader = NewStringBlobReader(b.blob);
  auto index = ReadZstdChunkedIndex(*reader, b.annotations);
  ASSERT_TRUE(index.ok()) << index.status();
  CheckIndex(b, *index);
}

TEST(ZstdChunkedReaderTest, CorruptFrameIsDataLoss) {
  BuiltBlob b = BuildZstdChunked(Entries());
  auto reader = NewStringBlobReader(b.blob);
  auto index = ReadZstdChunkedIndex(*reader, b.annotations);
  ASSERT_TRUE(index.ok());
  const Chunk& c = index->Chunks(*index->LookupPath("usr/lib/small"))[0];
  std::string compressed = b.blob.substr(c.compressed_offset, c.compressed_length);
  std::string flipped = compressed;
  flipped[flipped.size() - 6] ^= 0x01;
  EXPECT_EQ(DecodeChunk(c, flipped).status().code(), absl::StatusCode::kDataLoss);
  Chunk shorter = c;
  shorter.length -= 1;
  EXPECT_EQ(DecodeChunk(shorter, compressed).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lazypull::format
