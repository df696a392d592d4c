#include <string>

#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/oci/platform.h"
#include "gtest/gtest.h"

namespace lazypull::oci {
namespace {

const std::string kD1 = "sha256:" + std::string(64, 'a');
const std::string kD2 = "sha256:" + std::string(64, 'b');

std::string ManifestJson() {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         kD1 +
         R"(","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",)"
         R"("digest":")" +
         kD2 +
         R"(","size":100,"annotations":{"containerd.io/snapshot/stargz/toc.digest":"x"},)"
         R"("data":"AAA="}],"x-unknown":{"k":1}})";
}

TEST(OciManifestTest, ParsesAndRoundTripsKeepingUnknownFields) {
  auto m = ParseManifest(ManifestJson(), kOciManifest);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.digest.ToString(), kD1);
  EXPECT_EQ(m->config.size, 7);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].size, 100);
  EXPECT_EQ(m->layers[0].Annotation("containerd.io/snapshot/stargz/toc.digest"), "x");
  EXPECT_EQ(LayerCompressionOf(m->layers[0].media_type), LayerCompression::kGzip);
  std::string out = SerializeManifest(*m);
  EXPECT_EQ(nlohmann::json::parse(out), nlohmann::json::parse(ManifestJson()));
  auto again = ParseManifest(out);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(SerializeManifest(*again), out);
}

TEST(OciManifestTest, RejectsInvalid) {
  auto bad = [](const std::string& s) { return ParseManifest(s).status(); };
  EXPECT_EQ(bad("{").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"schemaVersion":1})").code(), absl::StatusCode::kInvalidArgument);
  std::string neg = ManifestJson();
  neg.replace(neg.find("\"size\":100"), 10, "\"size\":-1");
  auto st = bad(neg);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("manifest.layers[0]"), std::string::npos) << st;
  std::string baddigest = ManifestJson();
  baddigest.replace(baddigest.find(kD2), 10, "md5:zzzzzz");
  EXPECT_EQ(bad(baddigest).code(), absl::StatusCode::kInvalidArgument);
  // Manifest with a Docker content type but OCI mediaType.
  EXPECT_EQ(ParseManifest(ManifestJson(), kDockerManifest).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OciIndexTest, SelectsPlatform) {
  std::string j =
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[)"
      R"({"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
      kD1 +
      R"(","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},)"
      R"({"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
      kD2 + R"(","size":2,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]})";
  auto idx = ParseIndex(j);
  ASSERT_TRUE(idx.ok()) << idx.status();
  auto d = SelectPlatformManifest(*idx, *ParsePlatform("linux/aarch64"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->digest.ToString(), kD2);
  d = SelectPlatformManifest(*idx, *ParsePlatform("linux/arm/v7"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->digest.ToString(), kD1);
  auto miss = SelectPlatformManifest(*idx, *ParsePlatform("linux/s390x"));
  EXPECT_EQ(miss.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(miss.status().message().find("linux/arm/v7"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(SerializeIndex(*idx)), nlohmann::json::parse(j));
  EXPECT_EQ(*SniffMediaType(j), kDockerManifestList);
  EXPECT_FALSE(ParseManifest(j).ok());
}

// A SOCI-enabled image lists its SOCI index manifest (an artifact) under the image's own
// platform: the image is chosen whatever the order; an artifact only when nothing else matches.
TEST(OciIndexTest, SelectPlatformPrefersImagesOverArtifacts) {
  std::string j =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
    "manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD1 +
      R"(","size":1,"artifactType":"application/vnd.amazon.soci.index.v2+json",
    "platform":{"os":"linux","architecture":"amd64"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD2 +
      R"(","size":2,"platform":{"os":"linux","architecture":"amd64"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD1 +
      R"(","size":1,"artifactType":"application/vnd.example","platform":{"os":"linux","architecture":"arm64"}}]})";
  auto idx = ParseIndex(j);
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_EQ(SelectPlatformManifest(*idx, *ParsePlatform("linux/amd64"))->digest.ToString(), kD2);
  EXPECT_EQ(SelectPlatformManifest(*idx, *ParsePlatform("linux/arm64"))->digest.ToString(), kD1);
}

TEST(OciPlatformTest, HostIsNormalised) {
  Platform p = HostPlatform();
  EXPECT_EQ(p.os, "linux");
  EXPECT_NE(p.architecture, "x86_64");
  EXPECT_NE(p.architecture, "aarch64");
  EXPECT_TRUE(PlatformMatches(*ParsePlatform("linux/amd64"), *ParsePlatform("linux/x86_64")));
  EXPECT_FALSE(PlatformMatches(*ParsePlatform("linux/arm/v7"), *ParsePlatform("linux/arm/v6")));
  EXPECT_FALSE(ParsePlatform("linux//v7").ok());
}

TEST(OciImageConfigTest, RewritesDiffIdsKeepingEverythingElse) {
  std::string j =
      R"({"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"history":[{"created_by":"x"}],"rootfs":{"type":"layers","diff_ids":[")" +
      kD1 + R"("]},"zz":true})";
  auto c = ImageConfig::Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->diff_ids().size(), 1u);
  c->set_diff_ids({*Digest::Parse(kD2)});
  auto out = nlohmann::json::parse(c->Serialize());
  auto want = nlohmann::json::parse(j);
  want["rootfs"]["diff_ids"][0] = kD2;
  EXPECT_EQ(out, want);
  EXPECT_EQ(c->platform().architecture, "amd64");
  EXPECT_FALSE(ImageConfig::Parse(R"({"os":"linux","architecture":"amd64"})").ok());
}

}  // namespace
}  // namespace lazypull::oci
