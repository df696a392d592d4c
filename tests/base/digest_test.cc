#include "lazypull/digest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "lazypull/blob_reader.h"

namespace lazypull {
namespace {

TEST(DigestTest, OfEmptyStringIsTheWellKnownValue) {
  EXPECT_EQ(Digest::Of("").ToString(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(DigestTest, ParseRejectsOtherAlgorithmsAndBadHex) {
  EXPECT_EQ(Digest::Parse("sha512:00").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Digest::Parse("sha256:" + std::string(64, 'G')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Digest::Parse(Digest::Of("x").ToString()).ok());
}

TEST(DigestTest, VerifyReportsDataLoss) {
  Digest d = Digest::Of("abc");
  EXPECT_TRUE(d.Verify("abc").ok());
  EXPECT_EQ(d.Verify("abd").code(), absl::StatusCode::kDataLoss);
}

TEST(BlobReaderTest, StringReaderRangesAndBounds) {
  auto r = NewStringBlobReader("0123456789");
  EXPECT_EQ(*r->ReadAt(2, 3), "234");
  EXPECT_EQ(r->ReadAt(8, 3).status().code(), absl::StatusCode::kOutOfRange);
  std::vector<ByteRange> ranges = {{0, 2}, {9, 1}};
  std::vector<std::pair<uint64_t, std::string>> got;
  ASSERT_TRUE(r->StreamRanges(ranges, [&](uint64_t off, std::string_view d) {
                 got.emplace_back(off, std::string(d));
                 return absl::OkStatus();
               }).ok());
  EXPECT_THAT(got, ::testing::ElementsAre(::testing::Pair(0, "01"), ::testing::Pair(9, "9")));
  // A sink error stops the stream and is returned as is.
  EXPECT_EQ(
      r->StreamRanges(ranges, [](uint64_t, std::string_view) { return absl::AbortedError("stop"); })
          .code(),
      absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace lazypull
