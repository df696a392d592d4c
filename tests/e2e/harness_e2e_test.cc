// Checks the containerd/image harness itself against containerd's built-in overlayfs
// snapshotter: an image built by ImageBuilder, pushed to a real registry, pulled and run by a
// private containerd. If this fails, lazypull's e2e failures are harness failures.
#include <gtest/gtest.h>

#include "tests/harness/containerd_process.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

TEST(HarnessE2eTest, BuiltImageRunsOnOverlayfs) {
  TempDir dir("lp-h");
  ImageBuilder builder(dir.Sub("image"));
  builder.AddLayer(LayerChanges::Busybox());
  LayerChanges second;
  second.files = {{"/data/hello.txt", "hello from layer 1\n", 0640}};
  second.symlinks = {{"/data/link", "hello.txt"}};
  builder.AddLayer(second);
  LayerChanges third;
  third.deletions = {"/data/link"};
  third.files = {{"/data/hello.txt", "hello from layer 2\n", 0600}};
  builder.AddLayer(third);
  builder.SetCmd({"/bin/sh"});
  auto image = builder.Build("v1");
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->layer_digests.size(), 3u);
  ASSERT_EQ(image->layer_diff_ids.size(), 3u);

  auto registry = RegistryProcess::Start(dir.path());
  ASSERT_TRUE(registry.ok()) << registry.status();
  ASSERT_TRUE((*registry)->PushOciLayout(image->layout_dir, "v1", "harness/busybox:v1").ok());

  auto containerd = ContainerdProcess::Start(dir.Sub("containerd"));
  ASSERT_TRUE(containerd.ok()) << containerd.status();
  auto& ctr = **containerd;
  const std::string ref = (*registry)->host() + "/harness/busybox:v1";
  auto pull = ctr.CtrOk(
      {"-n", "harness", "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref});
  ASSERT_TRUE(pull.ok()) << pull.status();
  auto run =
      ctr.CtrOk({"-n", "harness", "run", "--rm", "--snapshotter", "overlayfs", ref, "h1", "/bin/sh",
                 "-c", "cat /data/hello.txt; stat -c %a /data/hello.txt; ls /data"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(*run, "hello from layer 2\n600\nhello.txt\n");
  EXPECT_EQ(ctr.Stop(), absl::OkStatus());
}

// Deletions become whiteouts in the deleting layer, and pushing keeps the blobs' digests (lazy
// pulling tests rely on both).
TEST(HarnessE2eTest, ImageBuilderWritesWhiteoutsAndPushKeepsDigests) {
  TempDir dir("lp-h");
  ImageBuilder builder(dir.Sub("image"));
  LayerChanges base;
  base.files = {{"/a/keep.txt", "keep\n"}, {"/a/gone.txt", "gone\n"}, {"/b/x", "x"}};
  base.hardlinks = {{"/a/keep-link", "/a/keep.txt"}};
  builder.AddLayer(base);
  LayerChanges top;
  top.deletions = {"/a/gone.txt", "/b"};
  builder.AddLayer(top);
  auto image = builder.Build();
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->layer_digests.size(), 2u);
  auto blob = [&](const std::string& digest) {
    return image->layout_dir + "/blobs/sha256/" + digest.substr(7);
  };
  auto base_list = RunShell("tar -tzvf " + blob(image->layer_digests[0]) +
                            " | awk '{print substr($1,1,1), $6}' | LC_ALL=C sort");
  ASSERT_TRUE(base_list.ok());
  // umoci writes the root dir too; of two hardlinked names the second one walked is the link.
  EXPECT_EQ(base_list->output,
            "- a/gone.txt\n- a/keep-link\n- b/x\nd .\nd a/\nd b/\nh a/keep.txt\n");
  // Whether the parent dirs' entries are repeated depends on their mtime granularity.
  auto top_list =
      RunShell("tar -tzf " + blob(image->layer_digests[1]) + " | grep -v '/$' | LC_ALL=C sort");
  ASSERT_TRUE(top_list.ok());
  EXPECT_EQ(top_list->output, ".\n.wh.b\na/.wh.gone.txt\n");

  auto registry = RegistryProcess::Start(dir.Sub("registry"));
  ASSERT_TRUE(registry.ok()) << registry.status();
  ASSERT_TRUE((*registry)->PushOciLayout(image->layout_dir, "latest", "harness/wh:1").ok());
  auto digest =
      RunShell("curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' http://" +
               (*registry)->host() + "/v2/harness/wh/manifests/1 | sha256sum | cut -d' ' -f1");
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ("sha256:" + digest->output, image->manifest_digest + "\n");
}

}  // namespace
}  // namespace lazypull::testing
