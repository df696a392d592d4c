// The SOCI index manifest: parsing the shape soci-snapshotter writes (v1 with subject, v2),
// refusing malformed ones, writing our own, and v2 discovery from the image manifest.
#include "fetcher/format/soci/soci_index.h"

#include "absl/status/status.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace lazypull::soci {
namespace {

using ::testing::HasSubstr;

const std::string kLayer1 = "sha256:" + std::string(64, '1');
const std::string kLayer2 = "sha256:" + std::string(64, '2');
const std::string kZtoc1 = "sha256:" + std::string(64, 'a');
const std::string kZtoc2 = "sha256:" + std::string(64, 'b');
const std::string kImage = "sha256:" + std::string(64, 'c');

// As soci's MarshalIndex writes it (Go's ocispec.Manifest field order).
std::string SociWritten(std::string_view config_type, bool with_subject,
                        std::string_view layer2_digest_annotation) {
  std::string subject =
      with_subject
          ? fmt::format(
                R"(,"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1234}})",
                kImage)
          : "";
  return fmt::format(
      R"({{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{{"mediaType":"{}","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},)"
      R"("layers":[{{"mediaType":"application/octet-stream","digest":"{}","size":4096,)"
      R"("annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","com.amazon.soci.span-size":"4194304"}}}},)"
      R"({{"mediaType":"application/octet-stream","digest":"{}","size":8192,)"
      R"("annotations":{{"com.amazon.soci.image-layer-digest":"{}","com.amazon.soci.image-layer-mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","com.amazon.soci.disable-xattrs":"true"}}}},)"
      R"({{"mediaType":"application/vnd.amazon.soci.prefetch.v1+json","digest":"{}","size":10,)"
      R"("annotations":{{"com.amazon.soci.image-layer-digest":"{}"}}}}]{},)"
      R"("annotations":{{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}}})",
      config_type, kZtoc1, kLayer1, kZtoc2, layer2_digest_annotation, kZtoc2, kLayer1, subject);
}

TEST(SociIndexTest, ParsesV2AsSociWritesIt) {
  auto index = ParseSociIndex(SociWritten(kSociIndexV2, false, kLayer2));
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->version, SociIndexVersion::kV2);
  EXPECT_FALSE(index->subject.has_value());
  EXPECT_EQ(index->build_tool_identifier, "AWS SOCI CLI v0.2");
  ASSERT_EQ(index->ztocs.size(), 2u);  // the prefetch artifact is not a zTOC
  EXPECT_EQ(index->ztocs[0].ztoc.digest.ToString(), kZtoc1);
  EXPECT_EQ(index->ztocs[0].ztoc.size, 4096);
  EXPECT_EQ(index->ztocs[0].layer_digest.ToString(), kLayer1);
  EXPECT_EQ(index->ztocs[0].layer_media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_EQ(index->ztocs[0].span_size, 4194304u);
  EXPECT_FALSE(index->ztocs[0].disable_xattrs);
  EXPECT_FALSE(index->ztocs[1].span_size.has_value());
  EXPECT_TRUE(index->ztocs[1].disable_xattrs);
  ASSERT_NE(index->Find(*Digest::Parse(kLayer2)), nullptr);
  EXPECT_EQ(index->Find(*Digest::Parse(kLayer2))->ztoc.digest.ToString(), kZtoc2);
  EXPECT_EQ(index->Find(*Digest::Parse(kImage)), nullptr);
}

TEST(SociIndexTest, ParsesV1WithSubject) {
  auto index = ParseSociIndex(SociWritten(kSociIndexV1, true, kLayer2));
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->version, SociIndexVersion::kV1);
  ASSERT_TRUE(index->subject.has_value());
  EXPECT_EQ(index->subject->digest.ToString(), kImage);
}

TEST(SociIndexTest, RefusesMalformedIndexes) {
  auto unknown =
      ParseSociIndex(SociWritten("application/vnd.oci.image.config.v1+json", false, kLayer2));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("unknown index version"));

  auto bad_digest = ParseSociIndex(SociWritten(kSociIndexV2, false, "sha256:nothex"));
  EXPECT_THAT(std::string(bad_digest.status().message()),
              HasSubstr("com.amazon.soci.image-layer-digest"));

  auto twice = ParseSociIndex(SociWritten(kSociIndexV2, false, kLayer1));
  EXPECT_THAT(std::string(twice.status().message()), HasSubstr("indexed twice"));

  EXPECT_EQ(ParseSociIndex(SociWritten(kSociIndexV2, false, kLayer2), 4096).status().code(),
            absl::StatusCode::kInvalidArgument);  // zTOC over the size cap
  EXPECT_EQ(ParseSociIndex("{").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SociIndexTest, WritesWhatSociWritesAndReadsItBack) {
  auto parsed = ParseSociIndex(SociWritten(kSociIndexV1, true, kLayer2));
  ASSERT_TRUE(parsed.ok());
  const std::string ours = oci::SerializeManifest(MakeSociIndexManifest(*parsed));
  const auto j = nlohmann::json::parse(ours);
  EXPECT_EQ(j["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_FALSE(j.contains("artifactType"));
  EXPECT_EQ(j["config"]["mediaType"], kSociIndexV1);
  EXPECT_EQ(j["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  EXPECT_EQ(j["config"]["size"], 2);
  ASSERT_EQ(j["layers"].size(), 2u);
  EXPECT_EQ(j["layers"][0]["mediaType"], "application/octet-stream");
  EXPECT_EQ(j["layers"][0]["annotations"]["com.amazon.soci.image-layer-digest"], kLayer1);
  EXPECT_EQ(j["layers"][0]["annotations"]["com.amazon.soci.span-size"], "4194304");
  EXPECT_EQ(j["layers"][1]["annotations"]["com.amazon.soci.disable-xattrs"], "true");
  EXPECT_EQ(j["subject"]["digest"], kImage);
  EXPECT_EQ(j["annotations"]["com.amazon.soci.build-tool-identifier"], "AWS SOCI CLI v0.2");
  auto back = ParseSociIndex(ours);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ztocs.size(), 2u);
  // v2 never carries a subject.
  SociIndex v2 = *parsed;
  v2.version = SociIndexVersion::kV2;
  EXPECT_FALSE(MakeSociIndexManifest(v2).subject.has_value());
}

TEST(SociIndexTest, V2DiscoveryAnnotation) {
  oci::Manifest image;
  auto none = SociIndexDigestOf(image);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  image.annotations[std::string(kAnnotationIndexDigest)] = kZtoc1;
  auto some = SociIndexDigestOf(image);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ((*some)->ToString(), kZtoc1);
  image.annotations[std::string(kAnnotationIndexDigest)] = "md5:x";
  EXPECT_EQ(SociIndexDigestOf(image).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::soci
