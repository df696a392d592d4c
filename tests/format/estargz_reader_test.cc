#include "fetcher/format/estargz_reader.h"

#include <sys/stat.h>

#include "fetcher/codec/gzip.h"
#include "fetcher/format/chunk_decoder.h"
#include "fetcher/format/format_detector.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/format/test_blob_builder.h"

namespace lazypull::format {
namespace {

using testing::BuildEstargz;
using testing::BuiltBlob;
using testing::EstargzBuildOptions;
using testing::Pattern;
using testing::ReadFileBytes;
using testing::SampleLayerEntries;
using testing::TestEntry;

absl::StatusOr<LayerIndex> Read(const BuiltBlob& b, FormatReadOptions o = {}) {
  auto reader = NewStringBlobReader(b.blob);
  return ReadEstargzIndex(*reader, b.toc_digest, o);
}

TEST(EstargzReaderTest, ReadsEveryEntryAndServesVerifiedBytes) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries(), {.chunk_size = 100000, .prioritized = 3});
  // A valid tar.gz for clients that know nothing of lazy pulling.
  auto tar = codec::Gunzip(b.blob, {.max_output = 1 << 24});
  ASSERT_TRUE(tar.ok()) << tar.status();
  auto reader = NewStringBlobReader(b.blob);
  auto index = ReadEstargzIndex(*reader, b.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->format(), LayerFormat::kEstargz);
  EXPECT_EQ(index->toc_digest(), b.toc_digest);

  Ino hosts = *index->LookupPath("etc/hosts");
  auto a = index->GetAttr(hosts);
  EXPECT_EQ(a->mode, S_IFREG | 0644u);
  EXPECT_EQ(a->uid, 7u);
  EXPECT_EQ(a->gid, 8u);
  EXPECT_EQ(a->mtime_sec, 1700000000);
  EXPECT_EQ(*index->GetXattr(hosts, "user.note"), "hi");
  EXPECT_EQ(*ReadFileBytes(*index, *reader, hosts), "127.0.0.1 localhost\n");

  Ino big = *index->LookupPath("bin/big");
  EXPECT_EQ(index->Chunks(big).size(), 3u);
  EXPECT_EQ(*ReadFileBytes(*index, *reader, big), Pattern(300000, 1));
  EXPECT_EQ(*index->LookupPath("bin/link"), big);
  EXPECT_EQ(index->GetAttr(big)->nlink, 2u);
  EXPECT_EQ(index->GetAttr(big)->mode, S_IFREG | 0755u);
  EXPECT_EQ(index->GetAttr(*index->LookupPath("bin/empty"))->size, 0u);
  EXPECT_EQ(index->SymlinkTarget(*index->LookupPath("bin/sh")), "busybox");
  EXPECT_EQ(index->GetAttr(*index->LookupPath("dev/null"))->dev_minor, 3u);
  EXPECT_TRUE(S_ISFIFO(index->GetAttr(*index->LookupPath("dev/fifo"))->mode));
  EXPECT_EQ(index->GetAttr(*index->LookupPath("old/removed"))->flags, kWhiteout);
  EXPECT_EQ(*index->GetXattr(*index->LookupPath("opq"), "trusted.overlay.opaque"), "y");
  EXPECT_EQ(*ReadFileBytes(*index, *reader, *index->LookupPath("zzz name with spaces ü")), "x");

  // Landmark hidden, prefetch range = everything before it.
  EXPECT_FALSE(index->LookupPath(".prefetch.landmark"));
  ASSERT_TRUE(index->prefetch_range());
  EXPECT_EQ(index->prefetch_range()->offset, 0u);
  uint64_t hosts_end =
      index->Chunks(hosts)[0].compressed_offset + index->Chunks(hosts)[0].compressed_length;
  EXPECT_EQ(index->prefetch_range()->length, hosts_end);
  EXPECT_FALSE(index->has_no_prefetch_landmark());
}

TEST(EstargzReaderTest, NoPrefetchLandmarkAndLegacyFooter) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries(), {.legacy_footer = true});
  auto tail = b.blob.substr(b.blob.size() - 47);
  auto footer = ParseEstargzFooter(tail, b.blob.size());
  ASSERT_TRUE(footer.ok()) << footer.status();
  EXPECT_EQ(footer->footer_size, 47u);
  auto index = Read(b);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_FALSE(index->prefetch_range());
  EXPECT_TRUE(index->has_no_prefetch_landmark());
  EXPECT_FALSE(index->LookupPath(".no.prefetch.landmark"));
}

TEST(EstargzReaderTest, InnerOffsetChunksShareAMember) {
  // Two small files in one gzip member, as newer estargz writers do with minChunkSize.
  std::string member = std::string("aaaa") + "bbbbbb";
  std::string prefix = *codec::GzipCompress(std::string(512, '\0'));
  std::string data_member = *codec::GzipCompress(member);
  nlohmann::json toc = {{"version", 1},
                        {"entries",
                         {{{"name", "a"},
                           {"type", "reg"},
                           {"size", 4},
                           {"offset", prefix.size()},
                           {"chunkDigest", Digest::Of("aaaa").ToString()}},
                          {{"name", "b"},
                           {"type", "reg"},
                           {"size", 6},
                           {"offset", prefix.size()},
                           {"innerOffset", 4},
                           {"chunkDigest", Digest::Of("bbbbbb").ToString()}}}}};
  std::string json = toc.dump();
  uint64_t toc_offset = prefix.size() + data_member.size();
  auto index = BuildEstargzIndex(json, toc_offset, toc_offset + 100, Digest::Of(json), {});
  ASSERT_TRUE(index.ok()) << index.status();
  auto reader = NewStringBlobReader(prefix + data_member + std::string(100, '\0'));
  EXPECT_EQ(*ReadFileBytes(*index, *reader, *index->LookupPath("a")), "aaaa");
  EXPECT_EQ(*ReadFileBytes(*index, *reader, *index->LookupPath("b")), "bbbbbb");
  EXPECT_EQ(index->Chunks(*index->LookupPath("b"))[0].compressed_length, data_member.size());
}

TEST(EstargzReaderTest, CorruptChunkIsDataLoss) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries());
  auto index = Read(b);
  ASSERT_TRUE(index.ok());
  const Chunk& c = index->Chunks(*index->LookupPath("bin/big"))[0];
  std::string compressed = b.blob.substr(c.compressed_offset, c.compressed_length);
  ASSERT_TRUE(DecodeChunk(c, compressed).ok());
  std::string flipped = compressed;
  flipped[compressed.size() / 2] ^= 0x40;
  EXPECT_EQ(DecodeChunk(c, flipped).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeChunk(c, compressed.substr(1)).status().code(), absl::StatusCode::kDataLoss);
  Chunk wrong = c;
  wrong.digest[0] ^= 1;
  auto st = DecodeChunk(wrong, compressed).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("digest mismatch"), std::string::npos) << st;
}

TEST(EstargzReaderTest, TocDigestChecked) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries());
  auto reader = NewStringBlobReader(b.blob);
  auto wrong = ReadEstargzIndex(*reader, Digest::Of("other"));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
  auto absent = ReadEstargzIndex(*reader, std::nullopt);
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kInvalidArgument);
  FormatReadOptions allow;
  allow.build.allow_missing_digests = true;
  EXPECT_TRUE(ReadEstargzIndex(*reader, std::nullopt, allow).ok());
}

TEST(EstargzReaderTest, BadFootersAreClearErrors) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries());
  // Truncated blob / footer.
  for (size_t cut : {size_t{1}, size_t{10}, size_t{51}}) {
    auto r = NewStringBlobReader(b.blob.substr(0, b.blob.size() - cut));
    EXPECT_EQ(ReadEstargzIndex(*r, b.toc_digest).status().code(),
              absl::StatusCode::kInvalidArgument)
        << cut;
  }
  auto tiny = NewStringBlobReader("abc");
  EXPECT_EQ(ReadEstargzIndex(*tiny, b.toc_digest).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Footer pointing outside the blob.
  std::string blob = b.blob;
  std::string field = "ffffffffffff0000";
  blob.replace(blob.size() - 51 + 16, 16, field);
  auto r = NewStringBlobReader(blob);
  auto st = ReadEstargzIndex(*r, b.toc_digest).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  // Footer pointing at a non-TOC offset (gzip data that is not a TOC member).
  blob = b.blob;
  blob.replace(blob.size() - 51 + 16, 16, "0000000000000000");
  r = NewStringBlobReader(blob);
  st = ReadEstargzIndex(*r, b.toc_digest).status();
  EXPECT_TRUE(st.code() == absl::StatusCode::kInvalidArgument ||
              st.code() == absl::StatusCode::kDataLoss)
      << st;
}

TEST(EstargzReaderTest, BadTocsAreClearErrors) {
  auto expect_invalid = [](std::function<void(nlohmann::json&)> mutate, const char* what,
                           uint64_t chunk_size = 4 << 20) {
    BuiltBlob b =
        BuildEstargz(SampleLayerEntries(), {.chunk_size = chunk_size, .mutate_toc = mutate});
    auto st = Read(b).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
  };
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["name"] = "../evil"; }, "dotdot");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["name"] = "/etc/evil"; }, "absolute");
  expect_invalid([](nlohmann::json& t) { t["entries"].push_back(t["entries"][3]); }, "dup");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["size"] = -5; }, "negative size");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["size"] = "12"; }, "string size");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["size"] = 1e30; }, "huge size");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["offset"] = 1ull << 40; }, "past EOF");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["offset"] = 0; }, "no offset");
  expect_invalid([](nlohmann::json& t) { t["entries"][3]["chunkDigest"] = "md5:x"; }, "bad digest");
  expect_invalid(
      [](nlohmann::json& t) {
        for (auto& e : t["entries"]) {
          e.erase("chunkDigest");
          e.erase("digest");
        }
      },
      "missing digests");
  expect_invalid([](nlohmann::json& t) { t["entries"][6]["linkName"] = "nothere"; },
                 "hardlink target");
  expect_invalid([](nlohmann::json& t) { t["entries"][6]["type"] = "socket"; }, "type");
  expect_invalid([](nlohmann::json& t) { t["version"] = 2; }, "version");
  expect_invalid([](nlohmann::json& t) { t["entries"] = 5; }, "entries type");
  expect_invalid(
      [](nlohmann::json& t) {
        t["entries"][2]["xattrs"] = {{"user.a", "!!"}};
      },
      "xattr base64");
  expect_invalid([](nlohmann::json& t) { t["entries"][2]["modtime"] = "yesterday"; }, "modtime");
  // Chunk entry overlapping the previous chunk.
  expect_invalid(
      [](nlohmann::json& t) {
        for (auto& e : t["entries"]) {
          if (e["type"] == "chunk") {
            e["chunkOffset"] = 5;
            break;
          }
        }
      },
      "overlap", 100000);
  expect_invalid([](nlohmann::json& t) { t = nlohmann::json::array(); }, "not object");
}

TEST(EstargzReaderTest, TocNotJsonAndTocBomb) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries());
  auto st = BuildEstargzIndex("{\"version\":1,\"entries\":[{", 10, 100, Digest(), {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("JSON"), std::string::npos) << st;
  EXPECT_EQ(BuildEstargzIndex("not json", 10, 100, Digest(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  FormatReadOptions small;
  small.max_toc_size = 1024;
  auto r = Read(b, small);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("TOC"), std::string::npos) << r.status();
}

TEST(FormatDetectorTest, ChoosesReader) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries());
  auto reader = NewStringBlobReader(b.blob);
  const std::string gz = "application/vnd.oci.image.layer.v1.tar+gzip";
  EXPECT_EQ(*DetectLayerFormat(gz, b.annotations, nullptr), LayerFormat::kEstargz);
  EXPECT_EQ(*DetectLayerFormat(gz, {}, reader.get()), LayerFormat::kEstargz);
  EXPECT_EQ(DetectLayerFormat(gz, {}, nullptr).status().code(), absl::StatusCode::kNotFound);
  auto plain = NewStringBlobReader(*codec::GzipCompress(std::string(5000, 'x')));
  EXPECT_EQ(DetectLayerFormat(gz, {}, plain.get()).status().code(), absl::StatusCode::kNotFound);
  auto index = OpenLayerIndex(*reader, gz, b.annotations);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->format(), LayerFormat::kEstargz);
}

// Counts the requests a format reader makes.
class CountingBlobReader : public BlobReader {
 public:
  explicit CountingBlobReader(std::string data) : base_(NewStringBlobReader(std::move(data))) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    ranges.push_back({offset, length});
    return base_->ReadAt(offset, length);
  }
  std::vector<ByteRange> ranges;

 private:
  std::unique_ptr<BlobReader> base_;
};

TEST(FormatDetectorTest, FooterAndTocInOneRequestWhenTheTailHoldsThem) {
  BuiltBlob b = BuildEstargz(SampleLayerEntries());
  const std::string gz = "application/vnd.oci.image.layer.v1.tar+gzip";
  CountingBlobReader reader(b.blob);
  auto index = OpenLayerIndex(reader, gz, b.annotations);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(reader.ranges.size(), 1u);  // the speculative tail (here: the whole small blob)
  EXPECT_EQ(reader.ranges[0].end(), b.blob.size());

  // A tail too short for the TOC: the second request fetches only what the tail lacks.
  FormatReadOptions short_tail;
  short_tail.speculative_tail_bytes = 100;
  CountingBlobReader reader2(b.blob);
  index = OpenLayerIndex(reader2, gz, b.annotations, short_tail);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(reader2.ranges.size(), 2u);
  EXPECT_EQ(reader2.ranges[0].offset, b.blob.size() - 100);
  EXPECT_EQ(reader2.ranges[1].end(), b.blob.size() - 100);

  // Tail off: footer, then TOC, as the format readers ask.
  FormatReadOptions no_tail;
  no_tail.speculative_tail_bytes = 0;
  CountingBlobReader reader3(b.blob);
  ASSERT_TRUE(OpenLayerIndex(reader3, gz, b.annotations, no_tail).ok());
  ASSERT_EQ(reader3.ranges.size(), 2u);
  EXPECT_EQ(reader3.ranges[0].length, kEstargzFooterSize);
}

}  // namespace
}  // namespace lazypull::format

namespace lazypull::format {
namespace {

TEST(EstargzTocTarTest, SkipsPaxHeadersAndRejectsOtherEntries) {
  auto header = [](const std::string& name, char type, size_t size) {
    std::string h(512, '\0');
    h.replace(0, name.size(), name);
    std::string sz = fmt::format("{:011o}", size);
    h.replace(124, sz.size(), sz);
    h[156] = type;
    return h;
  };
  std::string pax = "30 path=stargz.index.json\n";
  std::string json = "{\"version\":1}";
  std::string tar = header("PaxHeaders/x", 'x', pax.size()) + pax +
                    std::string(512 - pax.size(), '\0') +
                    header("stargz.index.json", '0', json.size()) + json + std::string(1024, '\0');
  auto got = ExtractEstargzTocJson(tar);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, json);
  EXPECT_EQ(ExtractEstargzTocJson(header("other.json", '0', 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExtractEstargzTocJson(header("stargz.index.json", '0', 5000)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExtractEstargzTocJson(std::string(100, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::format
