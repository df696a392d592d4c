#include "mount/overlay_composer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lazypull {
namespace {

using ::testing::ElementsAre;

TEST(OverlayComposerTest, ContainerdOverlayfsLayout) {
  const int64_t none[] = {0};
  auto m = ComposeSnapshotMounts("/r/snapshots", 7, SnapshotMountMode::kActive, {none, 0}, true);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (MountSpec{"bind", "/r/snapshots/7/fs", "", {"rw", "rbind"}}));
  m = ComposeSnapshotMounts("/r/snapshots", 7, SnapshotMountMode::kView, {none, 0}, true);
  EXPECT_EQ(m[0], (MountSpec{"bind", "/r/snapshots/7/fs", "", {"ro", "rbind"}}));

  const int64_t parents[] = {5, 3, 1};
  m = ComposeSnapshotMounts("/r/snapshots", 7, SnapshotMountMode::kActive, parents, true);
  EXPECT_EQ(m[0],
            (MountSpec{"overlay",
                       "overlay",
                       "",
                       {"index=off", "workdir=/r/snapshots/7/work", "upperdir=/r/snapshots/7/fs",
                        "lowerdir=/r/snapshots/5/fs:/r/snapshots/3/fs:/r/snapshots/1/fs"}}));
  m = ComposeSnapshotMounts("/r/snapshots", 7, SnapshotMountMode::kActive, parents, false);
  EXPECT_EQ(m[0].options[0], "workdir=/r/snapshots/7/work");
  m = ComposeSnapshotMounts("/r/snapshots", 7, SnapshotMountMode::kView, parents, true);
  EXPECT_EQ(
      m[0],
      (MountSpec{"overlay",
                 "overlay",
                 "",
                 {"index=off", "lowerdir=/r/snapshots/5/fs:/r/snapshots/3/fs:/r/snapshots/1/fs"}}));
  m = ComposeSnapshotMounts("/r/snapshots", 7, SnapshotMountMode::kView, {parents, 1}, true);
  EXPECT_EQ(m[0], (MountSpec{"bind", "/r/snapshots/5/fs", "", {"ro", "rbind"}}));
}

TEST(OverlayComposerTest, CompactLowerdirLikeContainerd) {
  std::vector<std::string> opts = {"index=off", "lowerdir=/r/snapshots/12/fs:/r/snapshots/1/fs",
                                   "workdir=/w"};
  EXPECT_EQ(CompactLowerdirOption(opts), "/r/snapshots/");
  EXPECT_THAT(opts, ElementsAre("index=off", "workdir=/w", "lowerdir=12/fs:1/fs"));
  std::vector<std::string> single = {"lowerdir=/r/snapshots/1/fs"};
  EXPECT_EQ(CompactLowerdirOption(single), "");
  EXPECT_THAT(single, ElementsAre("lowerdir=/r/snapshots/1/fs"));
}

}  // namespace
}  // namespace lazypull
