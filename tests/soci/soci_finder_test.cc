// FindSociIndex (fetcher/format/soci/soci_index_finder.h) against a real docker-registry 2.8
// on 127.0.0.1, which has no referrers API: v2 SOCI-enabled images found by tag (the stargz
// labels' case, no manifest digest) and by manifest digest (CRI's), v1 indexes through the
// referrers tag schema only when v1 is on, and the exact status codes for a missing, malformed,
// mismatched or corrupted index, with and without the index prefetched from the image index's
// entry (SociIndexPrefetch). The documents are laid out the way soci-snapshotter's
// `soci convert` (v2) and `soci create` + push (v1) write them.
#include <gtest/gtest.h>

#include <fstream>

#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/soci_index_finder.h"
#include "fetcher/format/soci/soci_index_prefetch.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/test_env.h"
#include "tests/registry/registry_test_util.h"

namespace lazypull::soci {
namespace {

using lazypull::testing::NewClient;
using lazypull::testing::PushedImage;
using lazypull::testing::PushImage;
using lazypull::testing::RandomBytes;
using lazypull::testing::RegistryProcess;
using lazypull::testing::TempDir;
using lazypull::testing::TestConfig;
using registry::Reference;

Reference Ref(const std::string& text) { return *registry::ParseReference(text); }

class SociFinderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = RegistryProcess::Start(dir_.Sub("reg"));
    ASSERT_TRUE(reg.ok()) << reg.status();
    reg_ = std::move(*reg);
    client_ = NewClient(TestConfig());
  }

  // A plain image with two layers in `repo`:v1 (its content chosen by `seed`).
  PushedImage Push(const std::string& repo, uint32_t seed = 1) {
    auto img = PushImage(*client_, Ref(reg_->host() + "/" + repo + ":v1"),
                         {RandomBytes(50000, seed), RandomBytes(3000, seed + 100)});
    EXPECT_TRUE(img.ok()) << img.status();
    return *img;
  }

  // A SOCI index manifest for `img` with a zTOC (opaque bytes here: the finder never reads
  // them) for its first layer, pushed by digest.
  oci::Descriptor PushIndex(const PushedImage& img, SociIndexVersion version,
                            const std::string& tool = "lazypull test") {
    std::string ztoc_bytes = RandomBytes(777, 3);
    ZtocRef z;
    z.ztoc.media_type = std::string(kZtocMediaType);
    z.ztoc.digest = Digest::Of(ztoc_bytes);
    z.ztoc.size = static_cast<int64_t>(ztoc_bytes.size());
    z.layer_digest = img.layers[0].digest;
    z.layer_media_type = img.layers[0].media_type;
    z.span_size = 4 << 20;
    EXPECT_TRUE(client_->PushBlob(img.ref, z.ztoc, ztoc_bytes).ok());
    EXPECT_TRUE(client_->PushBlob(img.ref, MakeEmptyConfig(), std::string(kEmptyConfig)).ok());
    SociIndex index;
    index.version = version;
    index.ztocs.push_back(z);
    index.build_tool_identifier = tool;
    if (version == SociIndexVersion::kV1) index.subject = img.manifest;
    return PushManifestBytes(img.ref, oci::SerializeManifest(MakeSociIndexManifest(index)));
  }

  oci::Descriptor PushManifestBytes(const Reference& repo, const std::string& bytes) {
    oci::Descriptor d;
    d.media_type = std::string(oci::kOciManifest);
    d.digest = Digest::Of(bytes);
    d.size = static_cast<int64_t>(bytes.size());
    Reference r = repo;
    r.tag.clear();
    r.digest = d.digest;
    auto pushed = client_->PushManifest(r, d.media_type, bytes);
    EXPECT_TRUE(pushed.ok()) << pushed.status();
    return d;
  }

  static oci::Descriptor MakeEmptyConfig() {
    oci::Descriptor d;
    d.media_type = std::string(kSociIndexV1);
    d.digest = Digest::Of(kEmptyConfig);
    d.size = 2;
    return d;
  }

  // Makes `img` SOCI-enabled (v2) the way `soci convert` does: the image manifest annotated
  // with `annotation_value` as its index digest, then an image index under tag `tag` listing
  // it first and the SOCI index (artifactType v2, same platform) second. Returns the
  // annotated manifest's descriptor.
  oci::Descriptor EnableV2(const PushedImage& img, const oci::Descriptor& soci_index,
                           const std::string& tag, const std::string& annotation_value) {
    Reference by_digest = img.ref;
    by_digest.tag.clear();
    by_digest.digest = img.manifest.digest;
    auto fetched = client_->FetchManifest(by_digest);
    EXPECT_TRUE(fetched.ok()) << fetched.status();
    auto m = *oci::ParseManifest(fetched->bytes, fetched->descriptor.media_type);
    m.annotations[std::string(kAnnotationIndexDigest)] = annotation_value;
    oci::Descriptor image = PushManifestBytes(img.ref, oci::SerializeManifest(m));
    image.platform = img.manifest.platform;
    image.annotations = m.annotations;
    oci::Descriptor soci = soci_index;
    soci.artifact_type = std::string(kSociIndexV2);
    soci.platform = img.manifest.platform;
    soci.annotations[std::string(kAnnotationImageManifestDigest)] = image.digest.ToString();
    oci::Index index;
    index.media_type = std::string(oci::kOciIndex);
    index.manifests = {image, soci};
    Reference tagged = img.ref;
    tagged.tag = tag;
    EXPECT_TRUE(client_->PushManifest(tagged, index.media_type, oci::SerializeIndex(index)).ok());
    return image;
  }

  // Lists a v1 index as a referrer of img (the tag schema, as oras does on this registry).
  void AttachV1(const PushedImage& img, const oci::Descriptor& soci_index) {
    oci::Descriptor d = soci_index;
    d.artifact_type = std::string(kSociIndexV1);
    auto tag_schema = client_->AddReferrer(img.ref, img.manifest.digest, d);
    ASSERT_TRUE(tag_schema.ok()) << tag_schema.status();
    EXPECT_TRUE(*tag_schema) << "docker-registry 2.8 has no referrers API";
  }

  absl::StatusOr<std::optional<FoundSociIndex>> Find(const std::string& ref,
                                                     std::optional<Digest> manifest, bool v1) {
    SociFinderOptions options;
    options.v1 = v1;
    return FindSociIndex(*client_, Ref(reg_->host() + "/" + ref), manifest, options);
  }

  // What the daemon does for a tag: Resolve, prefetching the SOCI index the image index's
  // entry names, then discovery from the resolved manifest through that prefetch.
  // FindPrefetched with a prefetch of its own: the status code it gives, and how many
  // prefetches it started.
  void ExpectPrefetchedError(const std::string& ref, absl::StatusCode code, size_t started) {
    SociIndexPrefetch prefetch;
    auto got = FindPrefetched(ref, prefetch);
    EXPECT_EQ(got.status().code(), code) << ref << ": " << got.status();
    EXPECT_EQ(prefetch.started(), started) << ref;
  }

  absl::StatusOr<std::optional<FoundSociIndex>> FindPrefetched(const std::string& ref,
                                                               SociIndexPrefetch& prefetch) {
    Reference r = Ref(reg_->host() + "/" + ref);
    auto resolved = client_->Resolve(
        r, std::nullopt, [&](const oci::Descriptor& entry) { prefetch.Start(*client_, r, entry); });
    if (!resolved.ok()) return resolved.status();
    SociFinderOptions options;
    options.prefetch = &prefetch;
    return FindSociIndexOfManifest(*client_, r, resolved->manifest_descriptor.digest,
                                   resolved->manifest, options);
  }

  TempDir dir_{"lazypull-soci-finder"};
  std::unique_ptr<RegistryProcess> reg_;
  std::unique_ptr<registry::RegistryClient> client_;
};

TEST_F(SociFinderTest, FindsV2ByTagAndByManifestDigest) {
  PushedImage img = Push("team/app");
  oci::Descriptor soci = PushIndex(img, SociIndexVersion::kV2);
  oci::Descriptor image = EnableV2(img, soci, "v1-soci", soci.digest.ToString());

  // By tag (stargz labels): the tag names the image index; the platform's image manifest is
  // picked, not the SOCI index listed under the same platform.
  for (bool v1 : {false, true}) {
    auto found = Find("team/app:v1-soci", std::nullopt, v1);
    ASSERT_TRUE(found.ok()) << found.status();
    ASSERT_TRUE(found->has_value());
    const FoundSociIndex& f = **found;
    EXPECT_EQ(f.descriptor.digest, soci.digest);
    EXPECT_EQ(f.descriptor.size, soci.size);
    EXPECT_EQ(f.image_manifest_digest, image.digest);
    EXPECT_EQ(f.index.version, SociIndexVersion::kV2);
    ASSERT_EQ(f.index.ztocs.size(), 1u);
    const ZtocRef* z = f.index.Find(img.layers[0].digest);
    ASSERT_NE(z, nullptr);
    EXPECT_EQ(z->ztoc.size, 777);
    EXPECT_EQ(z->ztoc.digest, Digest::Of(RandomBytes(777, 3)));
    EXPECT_EQ(z->span_size, 4u << 20);
    EXPECT_EQ(f.index.Find(img.layers[1].digest), nullptr);
    EXPECT_EQ(f.index.build_tool_identifier, "lazypull test");
  }
  // By manifest digest (CRI labels) with the image reference's tag.
  auto by_digest = Find("team/app:v1-soci", image.digest, false);
  ASSERT_TRUE(by_digest.ok()) << by_digest.status();
  ASSERT_TRUE(by_digest->has_value());
  EXPECT_EQ((*by_digest)->descriptor.digest, soci.digest);
  // With the manifest already in hand (the daemon's case): no manifest round trip.
  {
    Reference r = img.ref;
    r.digest = image.digest;
    auto m = client_->FetchManifest(r);
    ASSERT_TRUE(m.ok()) << m.status();
    auto parsed = oci::ParseManifest(m->bytes);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    uint64_t before = client_->stats().requests;
    auto held = FindSociIndexOfManifest(*client_, img.ref, image.digest, *parsed);
    ASSERT_TRUE(held.ok()) << held.status();
    ASSERT_TRUE(held->has_value());
    EXPECT_EQ((*held)->descriptor.digest, soci.digest);
    EXPECT_EQ(client_->stats().requests - before, 1u) << "only the SOCI index is fetched";
  }
  // The registry client's own resolution picks the image manifest too.
  auto resolved = client_->Resolve(Ref(reg_->host() + "/team/app:v1-soci"));
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->manifest_descriptor.digest, image.digest);
  // The original image is untouched and has no index.
  auto plain = Find("team/app:v1", std::nullopt, true);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->has_value());
}

TEST_F(SociFinderTest, FindsV1ThroughTagSchemaOnlyWhenEnabled) {
  PushedImage img = Push("team/v1app");
  oci::Descriptor soci = PushIndex(img, SociIndexVersion::kV1);
  AttachV1(img, soci);
  AttachV1(img, soci);  // idempotent: listed once
  auto listed = client_->FetchReferrers(img.ref, img.manifest.digest);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->from_tag_schema);
  ASSERT_EQ(listed->manifests.size(), 1u);
  EXPECT_EQ(listed->manifests[0].digest, soci.digest);

  auto off = Find("team/v1app:v1", std::nullopt, false);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->has_value()) << "v1 is off by default";

  for (std::optional<Digest> manifest :
       {std::optional<Digest>(), std::optional<Digest>(img.manifest.digest)}) {
    auto on = Find("team/v1app:v1", manifest, true);
    ASSERT_TRUE(on.ok()) << on.status();
    ASSERT_TRUE(on->has_value());
    EXPECT_EQ((*on)->descriptor.digest, soci.digest);
    EXPECT_EQ((*on)->index.version, SociIndexVersion::kV1);
    EXPECT_EQ((*on)->index.subject->digest, img.manifest.digest);
    EXPECT_NE((*on)->index.Find(img.layers[0].digest), nullptr);
  }

  // A referrer of another artifact type is not a SOCI index.
  PushedImage other = Push("team/other", 3);
  oci::Descriptor sig = PushIndex(other, SociIndexVersion::kV1);
  sig.artifact_type = "application/vnd.example.signature";
  ASSERT_TRUE(client_->AddReferrer(other.ref, other.manifest.digest, sig).ok());
  auto none = Find("team/other:v1", std::nullopt, true);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
}

TEST_F(SociFinderTest, BadIndexesGetExactCodes) {
  PushedImage img = Push("team/bad");
  oci::Descriptor soci = PushIndex(img, SociIndexVersion::kV2);

  // The annotation names an index the registry does not have.
  std::string absent = Digest::Of("no such index").ToString();
  EnableV2(img, soci, "absent", absent);
  auto missing = Find("team/bad:absent", std::nullopt, false);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find(absent), std::string::npos) << missing.status();

  // A malformed digest in the annotation.
  EnableV2(img, soci, "baddigest", "sha256:xyz");
  EXPECT_EQ(Find("team/bad:baddigest", std::nullopt, false).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A v1 index where the v2 annotation points: mismatched version.
  oci::Descriptor v1 = PushIndex(img, SociIndexVersion::kV1);
  EnableV2(img, v1, "wrongversion", v1.digest.ToString());
  auto wrong = Find("team/bad:wrongversion", std::nullopt, false);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument) << wrong.status();

  // A manifest that is no SOCI index (its config is the image config).
  EnableV2(img, soci, "notindex", img.manifest.digest.ToString());
  auto notindex = Find("team/bad:notindex", std::nullopt, false);
  EXPECT_EQ(notindex.status().code(), absl::StatusCode::kInvalidArgument) << notindex.status();

  // A v1 referrer whose subject is another manifest.
  PushedImage second = Push("team/bad2", 2);
  oci::Descriptor foreign = PushIndex(img, SociIndexVersion::kV1);  // subject: img, not second
  ASSERT_TRUE(client_->PushBlob(second.ref, MakeEmptyConfig(), std::string(kEmptyConfig)).ok());
  {
    Reference r = img.ref;
    r.tag.clear();
    r.digest = foreign.digest;
    auto bytes = client_->FetchManifest(r);
    ASSERT_TRUE(bytes.ok());
    auto parsed = oci::ParseManifest(bytes->bytes);
    ASSERT_TRUE(parsed.ok());
    for (const auto& l : parsed->layers) {
      ASSERT_TRUE(client_->PushBlob(second.ref, l, RandomBytes(777, 3)).ok());
    }
    PushManifestBytes(second.ref, bytes->bytes);
  }
  AttachV1(second, foreign);
  auto subject = Find("team/bad2:v1", std::nullopt, true);
  EXPECT_EQ(subject.status().code(), absl::StatusCode::kInvalidArgument) << subject.status();

  // Index bytes that do not match their digest (corrupted in the registry's storage).
  oci::Descriptor good = PushIndex(img, SociIndexVersion::kV2);
  EnableV2(img, good, "corrupt", good.digest.ToString());
  std::string data = reg_->storage_dir() + "/docker/registry/v2/blobs/sha256/" +
                     good.digest.hex().substr(0, 2) + "/" + good.digest.hex() + "/data";
  {
    std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << data;
    f.seekp(10);
    f.put('#');
  }
  auto corrupt = Find("team/bad:corrupt", std::nullopt, false);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss) << corrupt.status();
}

TEST_F(SociFinderTest, PrefetchedIndexGivesTheSameAnswerWithoutItsOwnRoundTrip) {
  PushedImage img = Push("team/pre");
  oci::Descriptor soci = PushIndex(img, SociIndexVersion::kV2);
  oci::Descriptor image = EnableV2(img, soci, "v1-soci", soci.digest.ToString());

  SociIndexPrefetch prefetch;
  const uint64_t before = client_->stats().requests;
  auto found = FindPrefetched("team/pre:v1-soci", prefetch);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(prefetch.started(), 1u);
  // The image index, the image manifest and the SOCI index: nothing after the manifest.
  EXPECT_EQ(client_->stats().requests - before, 3u);
  auto plain = Find("team/pre:v1-soci", std::nullopt, false);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(plain->has_value());
  const FoundSociIndex& a = **found;
  const FoundSociIndex& b = **plain;
  EXPECT_EQ(a.descriptor.digest, b.descriptor.digest);
  EXPECT_EQ(a.descriptor.size, b.descriptor.size);
  EXPECT_EQ(a.image_manifest_digest, image.digest);
  ASSERT_EQ(a.index.ztocs.size(), 1u);
  EXPECT_EQ(a.index.ztocs[0].ztoc.digest, b.index.ztocs[0].ztoc.digest);
  EXPECT_EQ(a.index.ztocs[0].layer_digest, img.layers[0].digest);

  // Taken: a second discovery fetches the index itself (and prefetches it again).
  const uint64_t again = client_->stats().requests;
  auto second = FindPrefetched("team/pre:v1-soci", prefetch);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(prefetch.started(), 2u);
  EXPECT_EQ(client_->stats().requests - again, 3u);
}

TEST_F(SociFinderTest, PrefetchKeepsExactCodesForMissingAndCorruptIndexes) {
  PushedImage img = Push("team/prebad");
  oci::Descriptor soci = PushIndex(img, SociIndexVersion::kV2);

  // Absent: NotFound, as without a prefetch; the failed prefetch is not the answer (the index
  // is asked for again).
  std::string absent = Digest::Of("no such index").ToString();
  EnableV2(img, soci, "absent", absent);
  {
    SociIndexPrefetch prefetch;
    const uint64_t before = client_->stats().requests;
    auto missing = FindPrefetched("team/prebad:absent", prefetch);
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
    EXPECT_NE(missing.status().message().find(absent), std::string::npos) << missing.status();
    EXPECT_EQ(prefetch.started(), 1u);
    EXPECT_GE(client_->stats().requests - before, 4u);
    EXPECT_EQ(Find("team/prebad:absent", std::nullopt, false).status().code(),
              absl::StatusCode::kNotFound);
  }

  // A malformed digest in the entry starts nothing; the manifest's annotation decides.
  EnableV2(img, soci, "baddigest", "sha256:xyz");
  ExpectPrefetchedError("team/prebad:baddigest", absl::StatusCode::kInvalidArgument, 0);

  // A v1 index where the v2 annotation points: InvalidArgument, prefetched or not.
  oci::Descriptor v1 = PushIndex(img, SociIndexVersion::kV1);
  EnableV2(img, v1, "wrongversion", v1.digest.ToString());
  ExpectPrefetchedError("team/prebad:wrongversion", absl::StatusCode::kInvalidArgument, 1);

  // Bytes that do not match their digest: DataLoss, prefetched or not.
  oci::Descriptor good = PushIndex(img, SociIndexVersion::kV2);
  EnableV2(img, good, "corrupt", good.digest.ToString());
  std::string data = reg_->storage_dir() + "/docker/registry/v2/blobs/sha256/" +
                     good.digest.hex().substr(0, 2) + "/" + good.digest.hex() + "/data";
  {
    std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << data;
    f.seekp(10);
    f.put('#');
  }
  ExpectPrefetchedError("team/prebad:corrupt", absl::StatusCode::kDataLoss, 1);
}

TEST_F(SociFinderTest, PrefetchOfAnotherIndexThanTheManifestNamesIsNotUsed) {
  // The image index's entry names one SOCI index, the (verified) manifest another: discovery
  // follows the manifest, and the prefetch of the entry's index serves nothing.
  PushedImage img = Push("team/premix");
  oci::Descriptor named = PushIndex(img, SociIndexVersion::kV2);
  oci::Descriptor decoy = PushIndex(img, SociIndexVersion::kV2, "another tool");
  ASSERT_NE(named.digest, decoy.digest);
  oci::Descriptor image = EnableV2(img, named, "mixed", named.digest.ToString());
  image.annotations[std::string(kAnnotationIndexDigest)] = decoy.digest.ToString();
  oci::Index index;
  index.media_type = std::string(oci::kOciIndex);
  index.manifests = {image};
  Reference tagged = img.ref;
  tagged.tag = "mixed";
  ASSERT_TRUE(client_->PushManifest(tagged, index.media_type, oci::SerializeIndex(index)).ok());

  SociIndexPrefetch prefetch;
  auto found = FindPrefetched("team/premix:mixed", prefetch);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(prefetch.started(), 1u);
  EXPECT_EQ((*found)->descriptor.digest, named.digest);
  EXPECT_EQ((*found)->image_manifest_digest, image.digest);
}

}  // namespace
}  // namespace lazypull::soci
