// Bad input to the SOCI code: corrupt or truncated zTOCs, checkpoint blobs, spans and gzip
// layers give clear errors with the right codes, never wrong bytes.
#include "absl/status/status.h"
#include "fetcher/format/soci/span_inflater.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "tests/format/soci_test_util.h"
#include "tests/harness/test_env.h"

namespace lazypull::soci {
namespace {

using lazypull::testing::TempDir;
using ::testing::HasSubstr;

class SociCorruptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("lazypull-soci-corrupt");
    auto layer = testing::MakeSampleLayer(*dir_);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = new testing::SampleLayer(*std::move(layer));
    auto blob = NewStringBlobReader(layer_->gzip);
    ZtocBuildOptions options;
    options.span_size = 256 << 10;
    auto ztoc = BuildZtoc(*blob, options);
    ASSERT_TRUE(ztoc.ok()) << ztoc.status();
    ztoc_ = new Ztoc(*std::move(ztoc));
    auto bytes = SerializeZtoc(*ztoc_);
    ASSERT_TRUE(bytes.ok());
    bytes_ = new std::string(*std::move(bytes));
  }
  static void TearDownTestSuite() {
    delete bytes_;
    delete ztoc_;
    delete layer_;
    delete dir_;
  }
  static absl::Status ParseModified(void (*modify)(Ztoc&)) {
    Ztoc z = *ztoc_;
    modify(z);
    auto bytes = SerializeZtoc(z);
    if (!bytes.ok()) return bytes.status();
    return ParseZtoc(*bytes).status();
  }

  static TempDir* dir_;
  static testing::SampleLayer* layer_;
  static Ztoc* ztoc_;
  static std::string* bytes_;
};
TempDir* SociCorruptTest::dir_ = nullptr;
testing::SampleLayer* SociCorruptTest::layer_ = nullptr;
Ztoc* SociCorruptTest::ztoc_ = nullptr;
std::string* SociCorruptTest::bytes_ = nullptr;

TEST_F(SociCorruptTest, TruncatedZtocIsInvalid) {
  for (size_t len : {size_t{0}, size_t{3}, size_t{64}, bytes_->size() / 2, bytes_->size() - 64}) {
    auto z = ParseZtoc(std::string_view(*bytes_).substr(0, len));
    EXPECT_EQ(z.status().code(), absl::StatusCode::kInvalidArgument) << len;
    EXPECT_THAT(std::string(z.status().message()), HasSubstr("ztoc:")) << len;
  }
}

TEST_F(SociCorruptTest, GarbageIsInvalid) {
  std::string garbage(4096, '\x5a');
  EXPECT_EQ(ParseZtoc(garbage).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SociCorruptTest, SizeLimitIsResourceExhausted) {
  ZtocLimits limits;
  limits.max_ztoc_bytes = bytes_->size() - 1;
  EXPECT_EQ(ParseZtoc(*bytes_, limits).status().code(), absl::StatusCode::kResourceExhausted);
  limits = {};
  limits.max_files = ztoc_->files.size() - 1;
  EXPECT_EQ(ParseZtoc(*bytes_, limits).status().code(), absl::StatusCode::kResourceExhausted);
  limits = {};
  limits.max_span_bytes = 1000;
  EXPECT_EQ(ParseZtoc(*bytes_, limits).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SociCorruptTest, InconsistentEntriesAreInvalid) {
  auto past_end = ParseModified([](Ztoc& z) {
    z.files.back().uncompressed_offset = z.uncompressed_archive_size - 1;
    z.files.back().uncompressed_size = 2;
  });
  EXPECT_EQ(past_end.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(past_end.message()), HasSubstr("runs past the archive end"));

  auto overlap = ParseModified([](Ztoc& z) {
    for (size_t i = 0; i + 1 < z.files.size(); ++i) {
      if (z.files[i].uncompressed_size > 1000) {
        z.files[i + 1].uncompressed_offset = z.files[i].uncompressed_offset + 10;
        return;
      }
    }
  });
  EXPECT_EQ(overlap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(overlap.message()), HasSubstr("overlaps"));

  auto type = ParseModified([](Ztoc& z) { z.files[0].type = "sparse"; });
  EXPECT_THAT(std::string(type.message()), HasSubstr("unknown type"));

  auto dev = ParseModified([](Ztoc& z) { z.files[0].devmajor = -1; });
  EXPECT_THAT(std::string(dev.message()), HasSubstr("device numbers"));
}

TEST_F(SociCorruptTest, SpanDigestMismatchesAreInvalid) {
  auto missing = ParseModified([](Ztoc& z) { z.span_digests.pop_back(); });
  // The serializer refuses to write it at all.
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SociCorruptTest, CheckpointBlobErrors) {
  const std::string& blob = ztoc_->checkpoints.blob();
  // Neither version's length.
  auto odd = ZinfoCheckpoints::Parse(blob.substr(0, blob.size() - 1), 1000);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(odd.status().message()), HasSubstr("fit neither version"));
  EXPECT_EQ(ZinfoCheckpoints::Parse(blob.substr(0, 5), 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Count over the limit.
  EXPECT_THAT(std::string(ZinfoCheckpoints::Parse(blob, 2).status().message()), HasSubstr("limit"));
  // Offsets that go backwards: swap checkpoint 1's compressed offset with 0's.
  std::string back = blob;
  const size_t rec1 = kZinfoHeaderSize + kCheckpointRecordSize;
  std::copy_n(blob.data() + kZinfoHeaderSize, 8, back.data() + rec1);
  auto backwards = ZinfoCheckpoints::Parse(back, 1000);
  EXPECT_THAT(std::string(backwards.status().message()), HasSubstr("do not increase"));
  // Bits out of range.
  std::string bits = blob;
  bits[rec1 + 16] = 9;
  EXPECT_THAT(std::string(ZinfoCheckpoints::Parse(bits, 1000).status().message()),
              HasSubstr("bits"));
  // A zero-count header.
  std::string zero = blob.substr(0, kZinfoHeaderSize);
  zero[0] = zero[1] = zero[2] = zero[3] = 0;
  EXPECT_EQ(ZinfoCheckpoints::Parse(zero, 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SociCorruptTest, FlippedSpanByteFailsItsDigest) {
  std::string gz = layer_->gzip;
  const ByteRange r = ztoc_->SpanCompressedRange(2);
  gz[r.offset + r.length / 2] ^= 0x40;
  auto span = testing::ReadSpan(*ztoc_, gz, 2);
  EXPECT_EQ(span.status().code(), absl::StatusCode::kDataLoss);
  // Neighbours are unaffected.
  EXPECT_TRUE(testing::ReadSpan(*ztoc_, gz, 1).ok());
}

TEST_F(SociCorruptTest, SpanInflaterRefusesWrongLengthsAndData) {
  const size_t i = 1;
  const ByteRange cr = ztoc_->SpanCompressedRange(i);
  const std::string_view bytes = std::string_view(layer_->gzip).substr(cr.offset, cr.length);
  const Checkpoint cp = ztoc_->checkpoints.at(i);
  const uint64_t len = ztoc_->SpanUncompressedRange(i).length;
  auto good = InflateSpan(cp, bytes, len);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(*good == layer_->tar.substr(cp.uncompressed_offset, len));
  // Claims more than the span holds: the input runs out.
  auto longer = InflateSpan(cp, bytes, len + 1);
  EXPECT_EQ(longer.status().code(), absl::StatusCode::kDataLoss);
  // Claims less: the span does not end where its next checkpoint starts.
  auto shorter = InflateSpan(cp, bytes, len - 1);
  EXPECT_EQ(shorter.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(shorter.status().message()), HasSubstr("more compressed data"));
  // Truncated input.
  EXPECT_EQ(InflateSpan(cp, bytes.substr(0, bytes.size() / 2), len).status().code(),
            absl::StatusCode::kDataLoss);
  // A wrong window gives wrong back-references: detected or not, never accepted silently
  // here since the output differs; the digest is what guards the bytes, the window comes
  // from the verified zTOC.
  Checkpoint bad = cp;
  bad.window = std::string_view(layer_->tar).substr(0, 100);
  EXPECT_EQ(InflateSpan(bad, bytes, len).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SociCorruptTest, BuilderRefusesBadGzip) {
  auto truncated = NewStringBlobReader(layer_->gzip.substr(0, layer_->gzip.size() / 2));
  auto t = BuildZtoc(*truncated);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("truncated"));

  std::string flipped = layer_->gzip;
  flipped[flipped.size() / 3] ^= 0xff;
  auto f = BuildZtoc(*NewStringBlobReader(flipped));
  EXPECT_FALSE(f.ok());

  auto trailing = NewStringBlobReader(layer_->gzip + std::string(16, '\0'));
  EXPECT_EQ(BuildZtoc(*trailing).status().code(), absl::StatusCode::kDataLoss);

  auto not_gzip = NewStringBlobReader(layer_->tar);
  EXPECT_EQ(BuildZtoc(*not_gzip).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lazypull::soci
