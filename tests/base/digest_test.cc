#include "lazypull/digest.h"

#include <gtest/gtest.h>

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
  auto many = r->ReadRanges({{0, 1}, {9, 1}});
  ASSERT_TRUE(many.ok());
  EXPECT_EQ((*many)[0], "0");
  EXPECT_EQ((*many)[1], "9");
}

}  // namespace
}  // namespace lazypull
