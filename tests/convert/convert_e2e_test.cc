// End to end: `lazypull convert` between a real registry and OCI layouts, and the converted
// images pulled and run by a real containerd with its stock overlayfs snapshotter (a client
// that knows nothing of lazy pulling).
#include <map>
#include <string>
#include <vector>

#include "fetcher/convert/estargz_writer.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "gtest/gtest.h"
#include "lazypull/digest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

std::string Lazypull() { return BinaryDir() + "/bin/lazypull"; }

absl::StatusOr<BuiltImage> BuildTestImage(const std::string& dir) {
  ImageBuilder b(dir);
  b.AddLayer(LayerChanges::Busybox());
  LayerChanges data;
  data.files = {{"/data/hello.txt", "hello from lazypull\n"},
                {"/data/owned", "x", 0600, 1000, 1000},
                {"/data/to-delete", "gone\n"},
                {"/data/keep/a", "a\n"}};
  data.symlinks = {{"/data/link", "hello.txt"}};
  data.hardlinks = {{"/data/hard", "/data/hello.txt"}};
  b.AddLayer(data);
  LayerChanges deletions;
  deletions.deletions = {"/data/to-delete", "/bin/vi", "/data/keep"};
  deletions.files = {{"/data/new.txt", "new\n"}};
  b.AddLayer(deletions);
  b.SetCmd({"/bin/sh"});
  return b.Build("v1");
}

absl::StatusOr<std::string> RunOk(const std::vector<std::string>& argv) {
  auto r = RunCommand(argv, std::chrono::seconds(300));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(argv[0] + " " + argv[1] + " failed: " + r->output);
  }
  return r->output;
}

// Reads a manifest (following an index to its first entry) and config from a registry with
// skopeo.
struct RemoteImage {
  oci::Manifest manifest;
  std::vector<Digest> diff_ids;
};
absl::StatusOr<RemoteImage> Inspect(const std::string& ref) {
  auto raw = RunOk({"skopeo", "inspect", "--tls-verify=false", "--raw", "docker://" + ref});
  if (!raw.ok()) return raw.status();
  auto manifest = oci::ParseManifest(*raw);
  if (!manifest.ok()) return manifest.status();
  auto config =
      RunOk({"skopeo", "inspect", "--tls-verify=false", "--config", "--raw", "docker://" + ref});
  if (!config.ok()) return config.status();
  auto parsed = oci::ImageConfig::Parse(*config);
  if (!parsed.ok()) return parsed.status();
  return RemoteImage{*manifest, parsed->diff_ids()};
}

class ConvertE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto image = BuildTestImage(dir_.Sub("image"));
    ASSERT_TRUE(image.ok()) << image.status();
    image_ = *image;
    auto reg = RegistryProcess::Start(dir_.Sub("registry"));
    ASSERT_TRUE(reg.ok()) << reg.status();
    registry_ = std::move(*reg);
    ASSERT_TRUE(registry_->PushOciLayout(image_.layout_dir, "v1", "src/app:v1").ok());
  }

  // Converts src/app:v1 into conv/app:TAG and checks the manifest, annotations and that each
  // layer's decompressed digest is the config's diff_id.
  void ConvertAndCheck(const std::string& format, const std::string& tag) {
    const std::string src = registry_->host() + "/src/app:v1";
    const std::string dst = registry_->host() + "/conv/app:" + tag;
    auto out = RunOk({Lazypull(), "--log-level", "warn", "convert", "--format", format,
                      "--plain-http", src, dst});
    ASSERT_TRUE(out.ok()) << out.status();
    auto remote = Inspect(dst);
    ASSERT_TRUE(remote.ok()) << remote.status();
    auto original = Inspect(src);
    ASSERT_TRUE(original.ok()) << original.status();
    ASSERT_EQ(remote->manifest.layers.size(), 3u);
    ASSERT_EQ(remote->diff_ids.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      const oci::Descriptor& l = remote->manifest.layers[i];
      std::string blob = dir_.Sub("blob" + std::to_string(i));
      auto r = RunShell("curl -sf http://" + registry_->host() + "/v2/conv/app/blobs/" +
                        l.digest.ToString() + " -o " + blob);
      ASSERT_TRUE(r.ok() && r->exit_code == 0);
      auto data = ReadFile(blob);
      ASSERT_TRUE(data.ok());
      EXPECT_EQ(Digest::Of(*data), l.digest);
      auto reader = NewFileBlobReader(blob);
      ASSERT_TRUE(reader.ok());
      std::string decompress = format == "estargz" ? "gzip -dc" : "zstd -dc";
      auto plain = RunShell(decompress + " < " + blob + " | sha256sum | cut -d' ' -f1");
      ASSERT_TRUE(plain.ok());
      EXPECT_EQ(plain->output, remote->diff_ids[i].hex() + "\n") << "layer " << i;
      if (format == "estargz") {
        EXPECT_EQ(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
        auto toc = Digest::Parse(l.Annotation(convert::kEstargzTocDigestAnnotation));
        ASSERT_TRUE(toc.ok());
        auto index = format::ReadEstargzIndex(**reader, *toc);
        ASSERT_TRUE(index.ok()) << index.status();
        EXPECT_NE(remote->diff_ids[i], original->diff_ids[i]);
        if (i == 2) {
          auto vi = index->LookupPath("bin/vi");
          ASSERT_TRUE(vi.has_value());
          EXPECT_TRUE(index->GetAttr(*vi)->flags & format::kWhiteout);
        }
      } else {
        EXPECT_EQ(l.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
        auto index = format::ReadZstdChunkedIndex(**reader, l.annotations);
        ASSERT_TRUE(index.ok()) << index.status();
        // zstd:chunked keeps the tar byte for byte.
        EXPECT_EQ(remote->diff_ids[i], original->diff_ids[i]);
      }
    }
  }

  // Pulls `tag` with a private containerd (stock overlayfs snapshotter) and runs a command.
  void PullAndRun(const std::string& tag) {
    std::string work = dir_.Sub("containerd");
    ASSERT_EQ(RunShell("mkdir -p " + work)->exit_code, 0);
    auto ctrd = ContainerdProcess::Start(work);
    ASSERT_TRUE(ctrd.ok()) << ctrd.status();
    const std::string ref = registry_->host() + "/conv/app:" + tag;
    const std::string ns = "convert-" + tag;
    auto pulled = (*ctrd)->CtrOk({"-n", ns, "images", "pull", "--plain-http", ref},
                                 std::chrono::seconds(180));
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    auto out = (*ctrd)->CtrOk(
        {"-n", ns, "run", "--rm", ref, "conv-" + tag, "/bin/sh", "-c",
         "cat /data/hello.txt /data/hard /data/link /data/new.txt; ls /data; "
         "test -e /bin/vi && echo vi-present; test -e /data/to-delete && echo not-deleted; "
         "stat -c '%u:%g %a' /data/owned"},
        std::chrono::seconds(120));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out,
              "hello from lazypull\nhello from lazypull\nhello from lazypull\nnew\n"
              "hard\nhello.txt\nlink\nnew.txt\nowned\n1000:1000 600\n");
  }

  TempDir dir_{"lazypull-convert-e2e"};
  BuiltImage image_;
  std::unique_ptr<RegistryProcess> registry_;
};

TEST_F(ConvertE2eTest, EstargzThroughRegistryPullsAndRunsWithOverlayfs) {
  ConvertAndCheck("estargz", "esgz");
  PullAndRun("esgz");
}

TEST_F(ConvertE2eTest, ZstdChunkedThroughRegistryPullsAndRunsWithOverlayfs) {
  ConvertAndCheck("zstd:chunked", "zstd");
  PullAndRun("zstd");
}

TEST_F(ConvertE2eTest, MultiPlatformIndexConvertsEveryPlatform) {
  // An OCI layout whose tag names an index with the same image for two platforms.
  const std::string layout = image_.layout_dir;
  nlohmann::json index = {{"schemaVersion", 2},
                          {"mediaType", "application/vnd.oci.image.index.v1+json"},
                          {"manifests",
                           {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                             {"digest", image_.manifest_digest},
                             {"size", image_.manifest_json.size()},
                             {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}},
                            {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                             {"digest", image_.manifest_digest},
                             {"size", image_.manifest_json.size()},
                             {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}}}}};
  std::string bytes = index.dump();
  Digest d = Digest::Of(bytes);
  ASSERT_TRUE(WriteFile(layout + "/blobs/sha256/" + d.hex(), bytes).ok());
  nlohmann::json top = {{"schemaVersion", 2},
                        {"manifests",
                         {{{"mediaType", "application/vnd.oci.image.index.v1+json"},
                           {"digest", d.ToString()},
                           {"size", bytes.size()},
                           {"annotations", {{"org.opencontainers.image.ref.name", "multi"}}}}}}};
  ASSERT_TRUE(WriteFile(layout + "/index.json", top.dump()).ok());

  const std::string out_layout = dir_.Sub("out-layout");
  auto out = RunOk({Lazypull(), "--log-level", "warn", "convert", "--format", "zstd:chunked",
                    "oci:" + layout + ":multi", "oci:" + out_layout + ":z"});
  ASSERT_TRUE(out.ok()) << out.status();
  auto top_out = ReadFile(out_layout + "/index.json");
  ASSERT_TRUE(top_out.ok());
  auto top_json = nlohmann::json::parse(*top_out);
  ASSERT_EQ(top_json["manifests"].size(), 1u);
  auto idx_digest = Digest::Parse(top_json["manifests"][0]["digest"].get<std::string>());
  ASSERT_TRUE(idx_digest.ok());
  auto idx_bytes = ReadFile(out_layout + "/blobs/sha256/" + idx_digest->hex());
  ASSERT_TRUE(idx_bytes.ok());
  auto converted = oci::ParseIndex(*idx_bytes);
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_EQ(converted->manifests.size(), 2u);
  EXPECT_EQ(converted->manifests[0].platform->architecture, "amd64");
  EXPECT_EQ(converted->manifests[1].platform->architecture, "arm64");
  for (const auto& m : converted->manifests) {
    auto mbytes = ReadFile(out_layout + "/blobs/sha256/" + m.digest.hex());
    ASSERT_TRUE(mbytes.ok());
    auto manifest = oci::ParseManifest(*mbytes);
    ASSERT_TRUE(manifest.ok());
    ASSERT_EQ(manifest->layers.size(), 3u);
    for (const auto& l : manifest->layers) {
      EXPECT_EQ(l.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
      EXPECT_FALSE(l.Annotation(convert::kZstdChunkedManifestChecksumAnnotation).empty());
    }
    // zstd:chunked keeps the diff_ids, so the config is byte-identical.
    EXPECT_EQ(manifest->config.digest.ToString(), image_.config_digest);
  }
}

}  // namespace
}  // namespace lazypull::testing
