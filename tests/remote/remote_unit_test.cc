// Unit tests of the remote-snapshot label handling and the [remote] config section.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "server/remote/layer_source.h"
#include "server/remote/remote_config.h"
#include "server/remote/start_hint.h"

namespace lazypull::remote {
namespace {

constexpr char kLayer[] = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
constexpr char kManifest[] =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";

TEST(LayerSourceTest, CriLabels) {
  Labels labels = {{"containerd.io/snapshot.ref", "chain"},
                   {kCriImageRefLabel, "127.0.0.1:5000/app:v1"},
                   {kCriLayerDigestLabel, kLayer},
                   {kCriManifestDigestLabel, kManifest},
                   {"containerd.io/snapshot/cri.image-layers", kLayer},
                   {"containerd.io/snapshot/stargz/toc.digest", "sha256:toc"},
                   {"containerd.io/gc.root", "x"}};
  absl::StatusOr<LayerSource> s = LayerSourceFromLabels(labels);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->image_ref, "127.0.0.1:5000/app:v1");
  EXPECT_EQ(s->layer_digest.ToString(), kLayer);
  ASSERT_TRUE(s->manifest_digest.has_value());
  EXPECT_EQ(s->manifest_digest->ToString(), kManifest);
  EXPECT_EQ(s->label_annotations, (std::map<std::string, std::string>{
                                      {"containerd.io/snapshot/stargz/toc.digest", "sha256:toc"}}));
}

TEST(LayerSourceTest, StargzLabels) {
  Labels labels = {{kStargzReferenceLabel, "127.0.0.1:5000/app:v1"},
                   {kStargzDigestLabel, kLayer},
                   {"containerd.io/snapshot/remote/stargz.layers", kLayer},
                   {"containerd.io/snapshot/remote/stargz.prefetch", "0"}};
  absl::StatusOr<LayerSource> s = LayerSourceFromLabels(labels);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->layer_digest.ToString(), kLayer);
  EXPECT_FALSE(s->manifest_digest.has_value());
  EXPECT_TRUE(s->label_annotations.empty());
}

TEST(LayerSourceTest, NoSourceIsNotFoundAndBadDigestIsInvalid) {
  EXPECT_TRUE(
      absl::IsNotFound(LayerSourceFromLabels({{"containerd.io/snapshot.ref", "c"}}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      LayerSourceFromLabels({{kStargzReferenceLabel, "r/a:b"}, {kStargzDigestLabel, "sha256:zz"}})
          .status()));
}

TEST(LayerSourceTest, ResolvedLayerRoundTripsThroughLabels) {
  ResolvedLayer layer;
  layer.image_ref = "127.0.0.1:5000/app@" + std::string(kManifest);
  layer.layer.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
  layer.layer.digest = *Digest::Parse(kLayer);
  layer.layer.size = 1234;
  layer.layer.annotations = {{"io.containers.zstd-chunked.manifest-position", "1:2:3:1"}};
  absl::StatusOr<ResolvedLayer> back = ResolvedLayerFromLabels(ResolvedLayerToLabels(layer));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->image_ref, layer.image_ref);
  EXPECT_EQ(back->layer.media_type, layer.layer.media_type);
  EXPECT_EQ(back->layer.digest, layer.layer.digest);
  EXPECT_EQ(back->layer.size, 1234);
  EXPECT_EQ(back->layer.annotations, layer.layer.annotations);
  EXPECT_TRUE(absl::IsNotFound(ResolvedLayerFromLabels({}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      ResolvedLayerFromLabels({{kSourceRefLabel, "x"}, {kSourceLayerLabel, "{bad"}}).status()));
}

TEST(RemoteConfigTest, ParsesAndRejects) {
  toml::table t = toml::parse(
      "fail_on_restore_error = true\nrestore_concurrency = 8\nstatus_interval_ms = 500\n"
      "preload_lifetime_ms = 1500\n");
  absl::StatusOr<RemoteConfig> c = ParseRemoteConfig(t);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preload_lifetime.count(), 1500);
  EXPECT_EQ(RemoteConfig().preload_lifetime, std::chrono::minutes(10));
  EXPECT_TRUE(c->fail_on_restore_error);
  EXPECT_EQ(c->restore_concurrency, 8u);
  EXPECT_EQ(c->status_interval.count(), 500);
  toml::table bad = toml::parse("restore_concurrency = 0\n");
  EXPECT_TRUE(
      absl::StrContains(ParseRemoteConfig(bad).status().message(), "remote.restore_concurrency"));
  toml::table unknown = toml::parse("nope = 1\n");
  EXPECT_TRUE(absl::IsInvalidArgument(ParseRemoteConfig(unknown).status()));
}

TEST(StartHintTest, ArgvZeroOnTheImagesPathOrAsWritten) {
  auto config = [](const std::string& inner) {
    auto c = oci::ImageConfig::Parse(
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},)"
        R"("config":)" +
        inner + "}");
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  };
  startup::StartHint h = StartHintFromConfig(
      config(R"({"Env":["A=1","PATH=/opt/bin:rel:/usr/bin"],"Cmd":["python3","-c","1"]})"));
  EXPECT_EQ(h.executables, (std::vector<std::string>{"/opt/bin/python3", "/usr/bin/python3"}));
  EXPECT_EQ(h.files, (std::vector<std::string>{"/etc/passwd", "/etc/group"}));
  EXPECT_EQ(h.args, (std::vector<std::string>{"-c", "1"}));
  EXPECT_EQ(h.working_dir, "/");
  h = StartHintFromConfig(config(R"({"Entrypoint":["./run.sh"],"Cmd":["x"],"WorkingDir":"/app"})"));
  EXPECT_EQ(h.executables, (std::vector<std::string>{"/app/./run.sh"}));
  EXPECT_EQ(h.args, (std::vector<std::string>{"x"}));
  EXPECT_EQ(h.working_dir, "/app");
  h = StartHintFromConfig(config(R"({"Cmd":["sh"]})"));  // the default PATH
  EXPECT_EQ(h.executables.size(), 6u);
  EXPECT_EQ(h.executables.front(), "/usr/local/sbin/sh");
  EXPECT_TRUE(StartHintFromConfig(config("{}")).executables.empty());
}

}  // namespace
}  // namespace lazypull::remote
