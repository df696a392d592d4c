// LocalFileTree on unpacked overlayfs layers as containerd's overlay snapshotter leaves them:
// whiteouts are char devices 0:0 and opaque directories carry trusted.overlay.opaque=y (both
// need root to create), stacked in an OverlayFileTree.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "fetcher/elf/file_tree.h"
#include "fetcher/elf/overlay_file_tree.h"
#include "gtest/gtest.h"

namespace lazypull::elf {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
}

TEST(LocalFileTreeRootTest, UnpackedLayersWithWhiteoutsAndOpaqueDirs) {
  char tmpl[] = "/tmp/lazypull-elf-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  fs::path root(tmpl);
  fs::path lower = root / "lower";
  fs::path upper = root / "upper";
  Write(lower / "etc/old.conf", "old");
  Write(lower / "etc/keep.conf", "keep");
  Write(lower / "opt/app/gone", "g");
  Write(upper / "opt/app/new", "new");
  fs::create_directories(upper / "etc");
  ASSERT_EQ(mknod((upper / "etc/old.conf").c_str(), S_IFCHR | 0, makedev(0, 0)), 0)
      << strerror(errno);
  ASSERT_EQ(setxattr((upper / "opt/app").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0)
      << strerror(errno);

  LocalFileTree up(upper.string());
  LocalFileTree low(lower.string());
  auto wh = up.Lstat("/etc/old.conf");
  ASSERT_TRUE(wh.ok()) << wh.status();
  EXPECT_TRUE(wh->whiteout);
  auto opq = up.Lstat("/opt/app");
  ASSERT_TRUE(opq.ok());
  EXPECT_TRUE(opq->opaque);
  EXPECT_FALSE(low.Lstat("/opt/app")->opaque);

  OverlayFileTree image({&up, &low});
  EXPECT_EQ(image.Lstat("/etc/old.conf").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(image.Lstat("/etc/keep.conf")->size, 4u);
  EXPECT_EQ(image.Lstat("/opt/app/gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(image.Lstat("/opt/app/new")->size, 3u);
  fs::remove_all(root);
}

}  // namespace
}  // namespace lazypull::elf
