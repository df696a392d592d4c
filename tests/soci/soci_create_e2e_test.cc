// `lazypull index create` end to end (issue 19) with real components: an umoci-built gzip
// image pushed by skopeo to a real docker-registry 2.8 (no referrers API), indexed into a
// SOCI-enabled image (v2) and as a v1 referrer (tag schema). Checks: the original layers and
// config byte for byte under the same digests; the documents laid out as soci's `convert`
// writes them; every zTOC decodable by the public schema with flatc and equal to what
// ParseZtoc reads and to a local BuildZtoc of the same blob; FindSociIndex finds v2, and v1
// only when enabled; containerd's `ctr pull` and `ctr-remote images rpull` of the SOCI-enabled
// image take the image manifest (the SOCI index manifest is never fetched) and the image runs;
// a v1 index pulled through the daemon with `[soci] v1` on (lazily) and off (normal pull).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/soci_index_finder.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/registry/registry_test_util.h"

namespace lazypull::soci {
namespace {

using lazypull::testing::BinaryDir;
using lazypull::testing::BuiltImage;
using lazypull::testing::CommandResult;
using lazypull::testing::ImageBuilder;
using lazypull::testing::LayerChanges;
using lazypull::testing::NewClient;
using lazypull::testing::RandomBytes;
using lazypull::testing::ReadFile;
using lazypull::testing::RegistryProcess;
using lazypull::testing::RunCommand;
using lazypull::testing::RunShell;
using lazypull::testing::TempDir;
using lazypull::testing::TestConfig;
using lazypull::testing::WriteFile;

constexpr uint64_t kSpan = 256 << 10;
constexpr uint64_t kMinLayer = 512 << 10;

// The test image: busybox (about 1 MiB of gzip); a layer of 3 MiB of random data and text in
// several files (multi-span); a small layer that deletes and adds (below min-layer-size).
absl::StatusOr<BuiltImage> BuildImage(const std::string& dir) {
  ImageBuilder b(dir);
  b.AddLayer(LayerChanges::Busybox());
  LayerChanges big;
  big.files.push_back({"/data/random.bin", RandomBytes(3 << 20, 7), 0640, 1000, 1000});
  std::string text;
  for (int i = 0; i < 20000; ++i) text += fmt::format("line {} of a text file\n", i);
  big.files.push_back({"/data/text.txt", text});
  big.files.push_back({"/data/empty", ""});
  big.symlinks.push_back({"/data/link", "text.txt"});
  big.hardlinks.push_back({"/data/hard", "/data/text.txt"});
  b.AddLayer(big);
  LayerChanges small;
  small.deletions.push_back("/data/empty");
  small.files.push_back({"/etc/soci-test", "indexed\n"});
  b.AddLayer(small);
  b.SetCmd({"/bin/sh"});
  return b.Build("v1");
}

absl::StatusOr<CommandResult> IndexCreate(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinaryDir() + "/bin/lazypull", "index", "create"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, std::chrono::seconds(300));
}

std::string BlobPath(const std::string& layout, const std::string& digest) {
  return layout + "/blobs/sha256/" + std::string(absl::StripPrefix(digest, "sha256:"));
}

class SociCreateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env_ = new Env();
    env_->status = []() -> absl::Status {
      auto reg = RegistryProcess::Start(env_->dir.Sub("reg"));
      if (!reg.ok()) return reg.status();
      env_->reg = std::move(*reg);
      auto image = BuildImage(env_->dir.Sub("image"));
      if (!image.ok()) return image.status();
      env_->image = *image;
      return env_->reg->PushOciLayout(env_->image.layout_dir, "v1", "team/app:v1");
    }();
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(env_->status.ok()) << env_->status;
    client_ = NewClient(TestConfig());
  }

  std::string Ref(const std::string& repo_tag) const { return env_->reg->host() + "/" + repo_tag; }
  registry::Reference ParsedRef(const std::string& repo_tag) const {
    return *registry::ParseReference(Ref(repo_tag));
  }
  std::string FetchBlob(const registry::Reference& ref, const oci::Descriptor& d) {
    auto b = client_->FetchBlob(ref, d);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? *b : "";
  }

  // The zTOC a local BuildZtoc makes of the original layer blob; by default with the
  // checkpoints around large files `index create` adds by default (half the span size).
  std::string LocalZtoc(const std::string& layer_digest, uint64_t large_file_spans = kSpan / 2) {
    auto reader = NewFileBlobReader(BlobPath(env_->image.layout_dir, layer_digest));
    EXPECT_TRUE(reader.ok());
    ZtocBuildOptions o;
    o.span_size = kSpan;
    o.large_file_spans = large_file_spans;
    o.build_tool_identifier = "lazypull index create";
    auto z = BuildZtoc(**reader, o);
    EXPECT_TRUE(z.ok()) << z.status();
    return *SerializeZtoc(*z);
  }

  // flatc --json of `bytes` with the public schema.
  nlohmann::json Flatc(const std::string& bytes) {
    TempDir out("lazypull-soci-flatc");
    EXPECT_TRUE(WriteFile(out.Sub("z.ztoc"), bytes).ok());
    const std::string schema = lazypull::testing::SourceDir() + "/fetcher/format/soci/ztoc.fbs";
    auto r = RunShell(fmt::format("flatc --json --strict-json --raw-binary -o {} {} -- {} 2>&1",
                                  out.path(), schema, out.Sub("z.ztoc")));
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
    auto text = ReadFile(out.Sub("z.json"));
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? nlohmann::json::parse(*text) : nlohmann::json();
  }

  // The zTOCs of `index` checked against the image's layers; returns their digests by layer.
  std::map<std::string, Digest> CheckZtocs(const registry::Reference& repo,
                                           const SociIndex& index) {
    std::map<std::string, Digest> out;
    std::set<std::string> want;
    for (size_t i = 0; i < env_->image.layer_digests.size(); ++i) {
      if (static_cast<uint64_t>(env_->image.layer_sizes[i]) >= kMinLayer) {
        want.insert(env_->image.layer_digests[i]);
      }
    }
    EXPECT_EQ(want.size(), 2u) << "busybox and the big layer are indexed, the small one not";
    EXPECT_EQ(index.ztocs.size(), want.size());
    for (const ZtocRef& r : index.ztocs) {
      SCOPED_TRACE(r.layer_digest.ToString());
      EXPECT_TRUE(want.count(r.layer_digest.ToString()));
      EXPECT_EQ(r.layer_media_type, oci::kOciLayerGzip);
      EXPECT_EQ(r.span_size, kSpan);
      EXPECT_EQ(r.ztoc.media_type, kZtocMediaType);
      std::string bytes = FetchBlob(repo, r.ztoc);
      EXPECT_EQ(bytes, LocalZtoc(r.layer_digest.ToString()));
      auto z = ParseZtoc(bytes);
      EXPECT_TRUE(z.ok()) << z.status();
      if (!z.ok()) continue;
      const auto j = Flatc(bytes);
      EXPECT_EQ(j["version"], "0.9");
      EXPECT_EQ(j["build_tool_identifier"], "lazypull index create");
      EXPECT_EQ(j["compressed_archive_size"].get<uint64_t>(), z->compressed_archive_size);
      EXPECT_EQ(j["uncompressed_archive_size"].get<uint64_t>(), z->uncompressed_archive_size);
      const auto& info = j["compression_info"];
      EXPECT_EQ(info["max_span_id"].get<int64_t>() + 1, static_cast<int64_t>(z->span_count()));
      EXPECT_EQ(info["span_digests"].size(), z->span_count());
      if (info["span_digests"].size() != z->span_count()) continue;
      for (size_t s = 0; s < z->span_count(); ++s) {
        EXPECT_EQ(info["span_digests"][s], z->span_digests[s].ToString());
      }
      const auto& md = j["toc"]["metadata"];
      EXPECT_EQ(md.size(), z->files.size());
      if (md.size() != z->files.size()) continue;
      for (size_t f = 0; f < md.size(); ++f) {
        EXPECT_EQ(md[f]["name"], z->files[f].name);
        EXPECT_EQ(md[f]["type"], z->files[f].type);
        EXPECT_EQ(md[f].value("uncompressed_offset", uint64_t{0}), z->files[f].uncompressed_offset);
        EXPECT_EQ(md[f].value("uncompressed_size", uint64_t{0}), z->files[f].uncompressed_size);
        EXPECT_EQ(md[f].value("mode", int64_t{0}), z->files[f].mode);
        EXPECT_EQ(md[f].value("uid", int64_t{0}), z->files[f].uid);
      }
      if (r.layer_digest.ToString() == env_->image.layer_digests[1]) {
        EXPECT_GE(z->span_count(), 12u) << "3 MiB of random data in 256 KiB spans";
      }
      out[r.layer_digest.ToString()] = r.ztoc.digest;
    }
    return out;
  }

  struct Env {
    TempDir dir{"lpsoci"};
    std::unique_ptr<RegistryProcess> reg;
    BuiltImage image;
    absl::Status status;
  };
  static Env* env_;
  std::unique_ptr<registry::RegistryClient> client_;
};

SociCreateTest::Env* SociCreateTest::env_ = nullptr;

TEST_F(SociCreateTest, V2SociEnabledImageInRegistry) {
  auto run = IndexCreate({"--plain-http", "--span-size", "256KiB", "--min-layer-size", "512KiB",
                          Ref("team/app:v1"), Ref("team/app:v1-soci")});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;

  // The tag names an OCI index: the annotated image manifest first, the SOCI index second.
  auto top = client_->FetchManifest(ParsedRef("team/app:v1-soci"));
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_NE(run->output.find(top->descriptor.digest.ToString()), std::string::npos) << run->output;
  ASSERT_EQ(top->descriptor.media_type, oci::kOciIndex);
  auto index = oci::ParseIndex(top->bytes);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->manifests.size(), 2u);
  const oci::Descriptor& image = index->manifests[0];
  const oci::Descriptor& soci = index->manifests[1];
  EXPECT_EQ(image.media_type, oci::kOciManifest);
  EXPECT_TRUE(image.artifact_type.empty());
  ASSERT_TRUE(image.platform.has_value());
  EXPECT_EQ(*image.platform, oci::HostPlatform());
  EXPECT_EQ(image.Annotation(std::string(kAnnotationIndexDigest)), soci.digest.ToString());
  EXPECT_EQ(soci.media_type, oci::kOciManifest);
  EXPECT_EQ(soci.artifact_type, kSociIndexV2);
  EXPECT_EQ(soci.platform, image.platform);
  EXPECT_EQ(soci.Annotation(std::string(kAnnotationImageManifestDigest)), image.digest.ToString());

  // The image manifest: the original's layers and config (same digests, sizes, media types),
  // plus the annotation.
  registry::Reference repo = ParsedRef("team/app:v1-soci");
  registry::Reference by_digest = repo;
  by_digest.tag.clear();
  by_digest.digest = image.digest;
  auto m_bytes = client_->FetchManifest(by_digest);
  ASSERT_TRUE(m_bytes.ok()) << m_bytes.status();
  auto m = oci::ParseManifest(m_bytes->bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  auto original = oci::ParseManifest(env_->image.manifest_json);
  ASSERT_TRUE(original.ok());
  EXPECT_EQ(m->config.digest, original->config.digest);
  ASSERT_EQ(m->layers.size(), original->layers.size());
  for (size_t i = 0; i < m->layers.size(); ++i) {
    EXPECT_EQ(m->layers[i].digest.ToString(), env_->image.layer_digests[i]);
    EXPECT_EQ(m->layers[i].size, env_->image.layer_sizes[i]);
    EXPECT_EQ(m->layers[i].media_type, original->layers[i].media_type);
    // Byte for byte what the registry serves under that digest: the layout's blob.
    EXPECT_EQ(FetchBlob(repo, m->layers[i]),
              *ReadFile(BlobPath(env_->image.layout_dir, env_->image.layer_digests[i])));
  }
  EXPECT_EQ(m->annotations.at(std::string(kAnnotationIndexDigest)), soci.digest.ToString());

  // The SOCI index manifest as soci writes it.
  registry::Reference soci_ref = repo;
  soci_ref.tag.clear();
  soci_ref.digest = soci.digest;
  auto s_bytes = client_->FetchManifest(soci_ref);
  ASSERT_TRUE(s_bytes.ok()) << s_bytes.status();
  auto raw = nlohmann::json::parse(s_bytes->bytes);
  EXPECT_EQ(raw["schemaVersion"], 2);
  EXPECT_EQ(raw["mediaType"], oci::kOciManifest);
  EXPECT_EQ(raw["config"]["mediaType"], kSociIndexV2);
  EXPECT_EQ(raw["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  EXPECT_EQ(raw["config"]["size"], 2);
  EXPECT_FALSE(raw.contains("subject"));
  EXPECT_EQ(raw["annotations"][std::string(kAnnotationBuildTool)], "lazypull index create");
  EXPECT_EQ(FetchBlob(repo, *oci::DescriptorFromJson(raw["config"])), "{}");
  auto parsed = ParseSociIndex(s_bytes->bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->version, SociIndexVersion::kV2);
  auto ztocs = CheckZtocs(repo, *parsed);
  // lazypull's fine index (on by default): named on each zTOC descriptor, its two blobs listed
  // after the zTOCs without a layer-digest annotation (soci's readers skip them), both in the
  // registry and decodable.
  ASSERT_EQ(raw["layers"].size(), 3 * parsed->ztocs.size());
  EXPECT_EQ(parsed->extra_blobs.size(), 2 * parsed->ztocs.size());
  for (const ZtocRef& r : parsed->ztocs) {
    std::map<std::string, std::string> annotations;
    AddZtocAnnotations(r.ztoc, annotations);
    auto fine = FineFromAnnotations(annotations);
    ASSERT_TRUE(fine.ok()) << fine.status();
    ASSERT_TRUE(fine->has_value());
    std::set<Digest> listed;
    for (const oci::Descriptor& d : parsed->extra_blobs) listed.insert(d.digest);
    EXPECT_TRUE(listed.count((*fine)->fine.digest));
    EXPECT_TRUE(listed.count((*fine)->windows.digest));
    auto frame = DecodeFineBlob(FetchBlob(repo, (*fine)->fine));
    ASSERT_TRUE(frame.ok()) << frame.status();
    auto fz = ParseZtoc(frame->ztoc, {.windowless_checkpoints = true});
    ASSERT_TRUE(fz.ok()) << fz.status();
    EXPECT_EQ(frame->windows.size(), fz->span_count());
    EXPECT_EQ(FetchBlob(repo, (*fine)->windows).size(), static_cast<size_t>((*fine)->windows.size));
  }
  for (const auto& l : raw["layers"]) {
    if (l["mediaType"] != kZtocMediaType) {
      EXPECT_FALSE(l.contains("annotations") &&
                   l["annotations"].contains(std::string(kAnnotationLayerDigest)));
    }
  }

  // The finder: by tag (stargz labels) and by manifest digest (CRI labels).
  for (std::optional<Digest> md : {std::optional<Digest>(), std::optional<Digest>(image.digest)}) {
    auto found = FindSociIndex(*client_, repo, md);
    ASSERT_TRUE(found.ok()) << found.status();
    ASSERT_TRUE(found->has_value());
    EXPECT_EQ((*found)->descriptor.digest, soci.digest);
    EXPECT_EQ((*found)->image_manifest_digest, image.digest);
    for (const auto& [layer, ztoc] : ztocs) {
      ASSERT_NE((*found)->index.Find(*Digest::Parse(layer)), nullptr);
      EXPECT_EQ((*found)->index.Find(*Digest::Parse(layer))->ztoc.digest, ztoc);
    }
  }
  // The original image is untouched: no index, v1 on or off.
  auto plain = FindSociIndex(*client_, ParsedRef("team/app:v1"), std::nullopt, {.v1 = true});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->has_value());
}

TEST_F(SociCreateTest, V1ReferrerThroughTagSchema) {
  auto run = IndexCreate({"--plain-http", "--v1", "--span-size", "256KiB", "--min-layer-size",
                          "512KiB", Ref("team/v1:v1")});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << "no such image yet: " << run->output;
  ASSERT_TRUE(env_->reg->PushOciLayout(env_->image.layout_dir, "v1", "team/v1:v1").ok());
  run = IndexCreate({"--plain-http", "--v1", "--span-size", "256KiB", "--min-layer-size", "512KiB",
                     Ref("team/v1:v1")});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  EXPECT_NE(run->output.find("tag schema"), std::string::npos) << run->output;

  registry::Reference repo = ParsedRef("team/v1:v1");
  const Digest manifest = *Digest::Parse(env_->image.manifest_digest);
  // The tag schema index lists the SOCI index with the v1 artifact type.
  registry::Reference tag = repo;
  tag.tag = "sha256-" + manifest.hex();
  auto listed = client_->FetchManifest(tag);
  ASSERT_TRUE(listed.ok()) << listed.status();
  auto referrers = oci::ParseIndex(listed->bytes);
  ASSERT_TRUE(referrers.ok());
  ASSERT_EQ(referrers->manifests.size(), 1u);
  EXPECT_EQ(referrers->manifests[0].artifact_type, kSociIndexV1);
  EXPECT_NE(run->output.find(referrers->manifests[0].digest.ToString()), std::string::npos);

  auto off = FindSociIndex(*client_, repo, std::nullopt);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->has_value()) << "v1 is off by default";
  for (std::optional<Digest> md : {std::optional<Digest>(), std::optional<Digest>(manifest)}) {
    auto on = FindSociIndex(*client_, repo, md, {.v1 = true});
    ASSERT_TRUE(on.ok()) << on.status();
    ASSERT_TRUE(on->has_value());
    EXPECT_EQ((*on)->index.version, SociIndexVersion::kV1);
    EXPECT_EQ((*on)->index.subject->digest, manifest);
    EXPECT_EQ((*on)->descriptor.digest, referrers->manifests[0].digest);
    CheckZtocs(repo, (*on)->index);
  }
  // The image itself did not change.
  auto resolved = client_->Resolve(repo);
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(resolved->manifest_descriptor.digest, manifest);
}

// A Docker schema 2 source (skopeo --format v2s2): as soci does, the SOCI-enabled image's
// manifest and config descriptor get OCI media types; layers (Docker media types), config
// bytes and every digest but the manifest's stay.
TEST_F(SociCreateTest, DockerManifestSource) {
  ASSERT_TRUE(
      env_->reg->PushOciLayout(env_->image.layout_dir, "v1", "team/docker:v1", "--format v2s2")
          .ok());
  registry::Reference src = ParsedRef("team/docker:v1");
  auto original = client_->Resolve(src);
  ASSERT_TRUE(original.ok()) << original.status();
  ASSERT_EQ(original->manifest.media_type, oci::kDockerManifest);
  auto run = IndexCreate({"--plain-http", "--span-size", "256KiB", "--min-layer-size", "512KiB",
                          Ref("team/docker:v1"), Ref("team/docker:soci")});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  auto enabled = client_->Resolve(ParsedRef("team/docker:soci"));
  ASSERT_TRUE(enabled.ok()) << enabled.status();
  EXPECT_EQ(enabled->manifest.media_type, oci::kOciManifest);
  EXPECT_EQ(enabled->manifest.config.media_type, oci::kOciConfig);
  EXPECT_EQ(enabled->manifest.config.digest, original->manifest.config.digest);
  ASSERT_EQ(enabled->manifest.layers.size(), original->manifest.layers.size());
  for (size_t i = 0; i < enabled->manifest.layers.size(); ++i) {
    EXPECT_EQ(enabled->manifest.layers[i].media_type, oci::kDockerLayerGzip);
    EXPECT_EQ(enabled->manifest.layers[i].digest, original->manifest.layers[i].digest);
    EXPECT_EQ(enabled->manifest.layers[i].size, original->manifest.layers[i].size);
  }
  auto found = FindSociIndex(*client_, ParsedRef("team/docker:soci"), std::nullopt);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->image_manifest_digest, enabled->manifest_descriptor.digest);
  ASSERT_EQ((*found)->index.ztocs.size(), 2u);
  for (const ZtocRef& r : (*found)->index.ztocs) {
    EXPECT_EQ(r.layer_media_type, oci::kDockerLayerGzip);
    EXPECT_EQ(FetchBlob(src, r.ztoc), LocalZtoc(r.layer_digest.ToString()));
  }
}

// `--large-file-spans 0`: soci's own checkpoints exactly (what a local BuildZtoc without them
// makes); the default's checkpoints around large files change at least one layer's zTOC.
TEST_F(SociCreateTest, LargeFileSpansZeroKeepsSocisOwnCheckpoints) {
  auto run = IndexCreate({"--plain-http", "--span-size", "256KiB", "--min-layer-size", "512KiB",
                          "--large-file-spans", "0", Ref("team/app:v1"), Ref("team/app:v1-exact")});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  auto found = FindSociIndex(*client_, ParsedRef("team/app:v1-exact"), std::nullopt);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  ASSERT_EQ((*found)->index.ztocs.size(), 2u);
  size_t differ = 0;
  for (const ZtocRef& r : (*found)->index.ztocs) {
    SCOPED_TRACE(r.layer_digest.ToString());
    const std::string exact = LocalZtoc(r.layer_digest.ToString(), 0);
    EXPECT_EQ(FetchBlob(ParsedRef("team/app:v1-exact"), r.ztoc), exact);
    differ += exact != LocalZtoc(r.layer_digest.ToString()) ? 1 : 0;
  }
  EXPECT_GE(differ, 1u) << "no layer has a file of at least half the span size";
}

// A multi-platform source (an OCI index): the host's platform is indexed by default, another
// with --platform; DST's index holds only the indexed platform's image and its SOCI index.
TEST_F(SociCreateTest, MultiPlatformSourcePicksThePlatform) {
  const std::string layout = env_->dir.Sub("multi-layout");
  ASSERT_EQ(RunShell("cp -a " + env_->image.layout_dir + " " + layout)->exit_code, 0);
  const oci::Platform host = oci::HostPlatform();
  const oci::Platform other{"linux", host.architecture == "arm64" ? "amd64" : "arm64"};
  // The same image manifest listed under two platforms (the index does not check).
  oci::Index multi;
  multi.media_type = std::string(oci::kOciIndex);
  for (const oci::Platform& p : {other, host}) {
    oci::Descriptor d;
    d.media_type = std::string(oci::kOciManifest);
    d.digest = *Digest::Parse(env_->image.manifest_digest);
    d.size = static_cast<int64_t>(env_->image.manifest_json.size());
    d.platform = p;
    multi.manifests.push_back(d);
  }
  const std::string multi_bytes = oci::SerializeIndex(multi);
  const Digest multi_digest = Digest::Of(multi_bytes);
  ASSERT_TRUE(WriteFile(BlobPath(layout, multi_digest.ToString()), multi_bytes).ok());
  ASSERT_TRUE(WriteFile(layout + "/index.json",
                        fmt::format(R"({{"schemaVersion":2,"manifests":[{{"mediaType":"{}",)"
                                    R"("digest":"{}","size":{},"annotations":)"
                                    R"({{"org.opencontainers.image.ref.name":"multi"}}}}]}})",
                                    oci::kOciIndex, multi_digest.ToString(), multi_bytes.size()))
                  .ok());
  for (const auto& [flags, want] : std::vector<std::pair<std::vector<std::string>, oci::Platform>>{
           {{}, host}, {{"--platform", "linux/" + other.architecture}, other}}) {
    SCOPED_TRACE(want.ToString());
    const std::string out = env_->dir.Sub("multi-out-" + want.architecture);
    std::vector<std::string> args = {"--span-size", "256KiB", "--min-layer-size", "512KiB"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back("oci:" + layout + ":multi");
    args.push_back("oci:" + out + ":soci");
    auto run = IndexCreate(args);
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->exit_code, 0) << run->output;
    auto top = nlohmann::json::parse(*ReadFile(out + "/index.json"));
    auto index = oci::ParseIndex(*ReadFile(BlobPath(out, top["manifests"][0]["digest"])));
    ASSERT_TRUE(index.ok()) << index.status();
    ASSERT_EQ(index->manifests.size(), 2u);
    EXPECT_EQ(index->manifests[0].platform, want);
    EXPECT_TRUE(index->manifests[0].artifact_type.empty());
    EXPECT_EQ(index->manifests[1].platform, want);
    EXPECT_EQ(index->manifests[1].artifact_type, kSociIndexV2);
    auto m = oci::ParseManifest(*ReadFile(BlobPath(out, index->manifests[0].digest.ToString())));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->annotations[std::string(kAnnotationIndexDigest)],
              index->manifests[1].digest.ToString());
  }
  // A platform the source does not have.
  auto run = IndexCreate({"--platform", "linux/s390x", "oci:" + layout + ":multi",
                          "oci:" + env_->dir.Sub("multi-none") + ":soci"});
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_NE(run->output.find("NOT_FOUND"), std::string::npos) << run->output;
}

// An image listing the same layer blob twice: one zTOC, listed once (an index names a layer
// once; soci's parser and ours key zTOCs by layer digest).
TEST_F(SociCreateTest, RepeatedLayerIndexedOnce) {
  const std::string layout = env_->dir.Sub("twice-layout");
  ASSERT_EQ(RunShell("cp -a " + env_->image.layout_dir + " " + layout)->exit_code, 0);
  auto m = oci::ParseManifest(env_->image.manifest_json);
  ASSERT_TRUE(m.ok());
  m->layers = {m->layers[1], m->layers[1]};
  auto config = nlohmann::json::parse(*ReadFile(BlobPath(layout, env_->image.config_digest)));
  config["rootfs"]["diff_ids"] = {env_->image.layer_diff_ids[1], env_->image.layer_diff_ids[1]};
  const std::string config_bytes = config.dump();
  m->config.digest = Digest::Of(config_bytes);
  m->config.size = static_cast<int64_t>(config_bytes.size());
  ASSERT_TRUE(WriteFile(BlobPath(layout, m->config.digest.ToString()), config_bytes).ok());
  const std::string manifest = oci::SerializeManifest(*m);
  const Digest digest = Digest::Of(manifest);
  ASSERT_TRUE(WriteFile(BlobPath(layout, digest.ToString()), manifest).ok());
  ASSERT_TRUE(WriteFile(layout + "/index.json",
                        fmt::format(R"({{"schemaVersion":2,"manifests":[{{"mediaType":"{}",)"
                                    R"("digest":"{}","size":{},"annotations":)"
                                    R"({{"org.opencontainers.image.ref.name":"twice"}}}}]}})",
                                    oci::kOciManifest, digest.ToString(), manifest.size()))
                  .ok());
  const std::string out = env_->dir.Sub("twice-out");
  auto run = IndexCreate({"--span-size", "256KiB", "--min-layer-size", "512KiB",
                          "oci:" + layout + ":twice", "oci:" + out + ":soci"});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  EXPECT_NE(run->output.find("same blob as an earlier layer"), std::string::npos) << run->output;
  auto top = nlohmann::json::parse(*ReadFile(out + "/index.json"));
  auto index = oci::ParseIndex(*ReadFile(BlobPath(out, top["manifests"][0]["digest"])));
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->manifests.size(), 2u);
  auto soci = ParseSociIndex(*ReadFile(BlobPath(out, index->manifests[1].digest.ToString())));
  ASSERT_TRUE(soci.ok()) << soci.status();
  ASSERT_EQ(soci->ztocs.size(), 1u);
  EXPECT_EQ(soci->ztocs[0].layer_digest.ToString(), env_->image.layer_digests[1]);
}

TEST_F(SociCreateTest, OciLayoutDestinationAndErrors) {
  const std::string out = env_->dir.Sub("out-layout");
  auto run = IndexCreate({"--span-size", "256KiB", "--min-layer-size", "512KiB",
                          "oci:" + env_->image.layout_dir + ":v1", "oci:" + out + ":soci"});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  for (const std::string& d : env_->image.layer_digests) {
    EXPECT_EQ(*ReadFile(BlobPath(out, d)), *ReadFile(BlobPath(env_->image.layout_dir, d))) << d;
  }
  auto index_json = ReadFile(out + "/index.json");
  ASSERT_TRUE(index_json.ok());
  auto top = nlohmann::json::parse(*index_json);
  ASSERT_EQ(top["manifests"].size(), 1u);
  EXPECT_EQ(top["manifests"][0]["mediaType"], oci::kOciIndex);
  auto root = ReadFile(BlobPath(out, top["manifests"][0]["digest"]));
  ASSERT_TRUE(root.ok());
  auto index = oci::ParseIndex(*root);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->manifests.size(), 2u);
  EXPECT_EQ(index->manifests[1].artifact_type, kSociIndexV2);
  auto soci = ParseSociIndex(*ReadFile(BlobPath(out, index->manifests[1].digest.ToString())));
  ASSERT_TRUE(soci.ok()) << soci.status();
  for (const ZtocRef& r : soci->ztocs) {
    EXPECT_EQ(*ReadFile(BlobPath(out, r.ztoc.digest.ToString())),
              LocalZtoc(r.layer_digest.ToString()));
  }

  // A corrupt layer (one flipped byte in the big layer's blob): DataLoss naming the layer,
  // exit 1, and DST's tag never written.
  const std::string corrupt = env_->dir.Sub("corrupt-layout");
  ASSERT_EQ(RunShell("cp -a " + env_->image.layout_dir + " " + corrupt)->exit_code, 0);
  {
    const std::string blob = BlobPath(corrupt, env_->image.layer_digests[1]);
    std::string bytes = *ReadFile(blob);
    bytes[bytes.size() / 2] ^= 0x20;
    ASSERT_TRUE(WriteFile(blob, bytes).ok());
  }
  const std::string corrupt_out = env_->dir.Sub("corrupt-out");
  run = IndexCreate({"--span-size", "256KiB", "--min-layer-size", "512KiB",
                     "oci:" + corrupt + ":v1", "oci:" + corrupt_out + ":soci"});
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_NE(run->output.find("DATA_LOSS"), std::string::npos) << run->output;
  EXPECT_NE(run->output.find(env_->image.layer_digests[1]), std::string::npos) << run->output;
  auto corrupt_index = ReadFile(corrupt_out + "/index.json");
  if (corrupt_index.ok()) {
    EXPECT_EQ(corrupt_index->find("soci"), std::string::npos) << *corrupt_index;
  }

  // Nothing big enough to index: exit 1, one clear line.
  run = IndexCreate(
      {"--plain-http", "--min-layer-size", "1GiB", Ref("team/app:v1"), Ref("team/app:none")});
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_NE(run->output.find("nothing to index"), std::string::npos) << run->output;
  EXPECT_FALSE(client_->FetchManifest(ParsedRef("team/app:none")).ok());
  // v2 without DST; v1 with DST; a bad span size.
  run = IndexCreate({"--plain-http", Ref("team/app:v1")});
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_NE(run->output.find("DST is required"), std::string::npos) << run->output;
  run = IndexCreate({"--plain-http", "--v1", Ref("team/app:v1"), Ref("team/app:x")});
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_NE(run->output.find("give no DST"), std::string::npos) << run->output;
  run = IndexCreate({"--span-size", "lots", Ref("team/app:v1"), Ref("team/app:x")});
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_NE(run->output.find("--span-size"), std::string::npos) << run->output;
}

// containerd picks the image manifest of a SOCI-enabled image: `ctr images pull` (no
// snapshotter labels), `ctr-remote images rpull` and `lazypull rpull` through lazypull (indexed
// layers mounted lazily, the small one pulled), then `ctr run` sees the image's tree. With
// ctr-remote (containerd's client.Pull, as CRI) the SOCI index manifest is not even fetched.
TEST_F(SociCreateTest, ContainerdPullsTheImageManifest) {
  // --fine-index=false: a plain soci index (no fine annotations) through the daemon's zTOC path.
  auto run = IndexCreate({"--plain-http", "--span-size", "256KiB", "--min-layer-size", "512KiB",
                          "--fine-index=false", Ref("team/app:v1"), Ref("team/app:ctr")});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  auto top = client_->FetchManifest(ParsedRef("team/app:ctr"));
  ASSERT_TRUE(top.ok());
  auto index = oci::ParseIndex(top->bytes);
  ASSERT_TRUE(index.ok());
  const std::string image = index->manifests[0].digest.ToString();
  const std::string soci = index->manifests[1].digest.ToString();

  ASSERT_EQ(mkdir(env_->dir.Sub("lp").c_str(), 0755), 0);
  auto snapshotter = lazypull::testing::SnapshotterProcess::Start(env_->dir.Sub("lp"));
  ASSERT_TRUE(snapshotter.ok()) << snapshotter.status();
  lazypull::testing::ContainerdOptions options;
  options.proxy_snapshotter_socket = (*snapshotter)->socket();
  ASSERT_EQ(mkdir(env_->dir.Sub("cd").c_str(), 0755), 0);
  auto cd = lazypull::testing::ContainerdProcess::Start(env_->dir.Sub("cd"), options);
  ASSERT_TRUE(cd.ok()) << cd.status();
  const std::string ref = Ref("team/app:ctr");

  auto pulled = (*cd)->CtrOk({"-n", "plain", "images", "pull", "--plain-http", ref});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  auto rpulled = RunCommand({"ctr-remote", "--address", (*cd)->address(), "-n", "remote", "images",
                             "rpull", "--snapshotter", "lazypull", "--plain-http", ref},
                            std::chrono::seconds(180));
  ASSERT_TRUE(rpulled.ok()) << rpulled.status();
  ASSERT_EQ(rpulled->exit_code, 0) << rpulled->output;
  auto lp_pulled = RunCommand({BinaryDir() + "/bin/lazypull", "rpull", "--address",
                               (*cd)->address(), "--namespace", "lp", "--plain-http", ref},
                              std::chrono::seconds(180));
  ASSERT_TRUE(lp_pulled.ok()) << lp_pulled.status();
  ASSERT_EQ(lp_pulled->exit_code, 0) << lp_pulled->output;
  for (const std::string ns : {"plain", "remote", "lp"}) {
    SCOPED_TRACE(ns);
    auto content = (*cd)->CtrOk({"-n", ns, "content", "ls", "-q"});
    ASSERT_TRUE(content.ok()) << content.status();
    EXPECT_NE(content->find(image), std::string::npos) << *content;
    if (ns != "plain") {
      // client.Pull (ctr-remote, CRI) keeps only the first manifest matching the platform;
      // lazypull rpull resolves like it.
      EXPECT_EQ(content->find(soci), std::string::npos) << "SOCI index fetched:\n" << *content;
    }  // `ctr images pull` 1.6 fetches every matching manifest (no limit), unpacks the first.
    std::vector<std::string> args = {"-n", ns, "run", "--rm"};
    if (ns != "plain") {
      args.push_back("--snapshotter");
      args.push_back("lazypull");
    }
    args.insert(args.end(), {ref, "c-" + ns, "/bin/sh", "-c",
                             "cat /etc/soci-test; wc -c < /data/random.bin; ls /data"});
    auto out = (*cd)->CtrOk(args);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, "indexed\n3145728\nhard\nlink\nrandom.bin\ntext.txt\n");
  }
  EXPECT_EQ(index->manifests.size(), 2u);
  EXPECT_FALSE(absl::StrContains((*snapshotter)->ReadLog(), "fine index"))
      << (*snapshotter)->ReadLog();
  EXPECT_EQ((*cd)->Stop(), absl::OkStatus());
  EXPECT_EQ((*snapshotter)->Stop(), absl::OkStatus());
}

// A v1 index (the tag schema: docker-registry 2.8 has no referrers API) through the daemon. With
// `[soci] v1 = true`, `lazypull rpull` and `ctr-remote images rpull` mount the indexed layers
// lazily (`lazy (soci)`; the small layer has no zTOC and is downloaded) and a container sees
// exactly what containerd's own unpack of the image gives. With v1 off (the default) the same
// image falls back to a normal pull: one log line per layer saying why, the same tree.
TEST_F(SociCreateTest, V1IndexPulledThroughTheDaemon) {
  ASSERT_TRUE(env_->reg->PushOciLayout(env_->image.layout_dir, "v1", "team/v1d:v1").ok());
  // The fine index (default on) in 64 KiB spans: the daemon serves the layers through it.
  auto run = IndexCreate({"--plain-http", "--v1", "--span-size", "256KiB", "--min-layer-size",
                          "512KiB", "--fine-span-size", "64KiB", Ref("team/v1d:v1")});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->exit_code, 0) << run->output;
  EXPECT_NE(run->output.find("tag schema"), std::string::npos) << run->output;
  const std::string ref = Ref("team/v1d:v1");
  const std::string script =
      "cat /etc/soci-test; find /bin /etc /data | sort | md5sum; ls -ln /data | grep -v ^total; "
      "sha256sum /data/random.bin /data/text.txt /bin/busybox";
  std::string reference;  // the tree as containerd's own unpack (overlayfs) gives it
  for (const bool v1 : {true, false}) {
    SCOPED_TRACE(v1 ? "v1 = true" : "v1 = false");
    const std::string tag = v1 ? "on" : "off";
    ASSERT_EQ(mkdir(env_->dir.Sub("lp-v1" + tag).c_str(), 0755), 0);
    lazypull::testing::SnapshotterOptions sopts;
    sopts.config_toml = v1 ? "[soci]\nv1 = true\n" : "";
    auto snapshotter =
        lazypull::testing::SnapshotterProcess::Start(env_->dir.Sub("lp-v1" + tag), sopts);
    ASSERT_TRUE(snapshotter.ok()) << snapshotter.status();
    lazypull::testing::ContainerdOptions options;
    options.proxy_snapshotter_socket = (*snapshotter)->socket();
    ASSERT_EQ(mkdir(env_->dir.Sub("cd-v1" + tag).c_str(), 0755), 0);
    auto cd = lazypull::testing::ContainerdProcess::Start(env_->dir.Sub("cd-v1" + tag), options);
    ASSERT_TRUE(cd.ok()) << cd.status();
    if (reference.empty()) {
      ASSERT_TRUE((*cd)->CtrOk({"-n", "plain", "images", "pull", "--plain-http", ref}).ok());
      auto out =
          (*cd)->CtrOk({"-n", "plain", "run", "--rm", ref, "c-plain", "/bin/sh", "-c", script});
      ASSERT_TRUE(out.ok()) << out.status();
      reference = *out;
      ASSERT_NE(reference.find("indexed\n"), std::string::npos) << reference;
    }
    auto pulled = RunCommand({BinaryDir() + "/bin/lazypull", "rpull", "--address", (*cd)->address(),
                              "--namespace", "lp", "--plain-http", ref},
                             std::chrono::seconds(180));
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    ASSERT_EQ(pulled->exit_code, 0) << pulled->output;
    size_t soci_lines = 0;
    for (size_t at = 0; (at = pulled->output.find(" lazy (soci) ", at)) != std::string::npos;
         ++at) {
      ++soci_lines;
    }
    EXPECT_EQ(soci_lines, v1 ? 2u : 0u) << pulled->output;
    EXPECT_NE(pulled->output.find(v1 ? "2 lazy, 1 downloaded" : "0 lazy, 3 downloaded"),
              std::string::npos)
        << pulled->output;
    std::vector<std::string> namespaces = {"lp"};
    if (v1) {
      auto rpulled =
          RunCommand({"ctr-remote", "--address", (*cd)->address(), "-n", "remote", "images",
                      "rpull", "--snapshotter", "lazypull", "--plain-http", ref},
                     std::chrono::seconds(180));
      ASSERT_TRUE(rpulled.ok()) << rpulled.status();
      ASSERT_EQ(rpulled->exit_code, 0) << rpulled->output;
      namespaces.push_back("remote");
    } else {
      // One line per layer, saying why: v1 indexes are not looked for.
      size_t fallbacks = 0;
      std::istringstream log((*snapshotter)->ReadLog());
      for (std::string line; std::getline(log, line);) {
        fallbacks += absl::StrContains(line, "layer is not lazily mountable") &&
                     absl::StrContains(line, "[soci] v1 = false");
      }
      EXPECT_EQ(fallbacks, 3u) << (*snapshotter)->ReadLog();
    }
    for (const std::string& ns : namespaces) {
      auto out = (*cd)->CtrOk({"-n", ns, "run", "--rm", "--snapshotter", "lazypull", ref,
                               "c-" + ns + tag, "/bin/sh", "-c", script});
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, reference) << ns;
    }
    // Both indexed layers opened through the fine index (with v1 on), none falling back.
    size_t fine_opens = 0;
    std::istringstream log((*snapshotter)->ReadLog());
    for (std::string line; std::getline(log, line);) {
      fine_opens += absl::StrContains(line, "SOCI layer opened through its fine index");
      EXPECT_FALSE(absl::StrContains(line, "fine index unusable")) << line;
    }
    if (v1) {
      EXPECT_GE(fine_opens, 2u) << (*snapshotter)->ReadLog();
    } else {
      EXPECT_EQ(fine_opens, 0u);
    }
    auto status =
        RunCommand({BinaryDir() + "/bin/lazypull", "status", "--root", (*snapshotter)->root()},
                   std::chrono::seconds(30));
    ASSERT_TRUE(status.ok());
    // The two indexed layers (busybox and the big one) are served as soci; nothing when off.
    std::set<std::string> soci_layers;
    std::istringstream rows(status->output);
    for (std::string row; std::getline(rows, row);) {
      std::istringstream cols(row);
      std::string snap, layer, format;
      if (cols >> snap >> layer >> format && format == "soci") soci_layers.insert(layer);
    }
    std::set<std::string> want;
    if (v1) {
      for (int i : {0, 1}) want.insert(env_->image.layer_digests[i].substr(7, 12));
    }
    EXPECT_EQ(soci_layers, want) << status->output;
    EXPECT_EQ((*cd)->Stop(), absl::OkStatus());
    EXPECT_EQ((*snapshotter)->Stop(), absl::OkStatus());
  }
}

}  // namespace
}  // namespace lazypull::soci
