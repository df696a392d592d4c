// EROFS images through the real kernel (root): file-backed mount(2) of our images with the data
// on `device=` (the lazy blob layout with 4 KiB and 512-byte blocks, and the original tar with
// 512-byte blocks), compared with the index entry by entry and byte for byte; and the in-place
// replacement of a mount (MOVE_MOUNT_BENEATH) that graduation uses.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/image_writer.h"
#include "mount/erofs/kernel_mount.h"
#include "mount/fuse/stale_mounts.h"
#include "tests/erofs/erofs_test_util.h"
#include "tests/harness/test_env.h"

namespace lazypull::erofs_testing {
namespace {

using mount::erofs::KernelErofsMount;
using testing::TempDir;
using testing::WriteFile;

// Writes the lazy-blob image and blob of `layer` into `dir`; returns {image, blob} paths.
std::pair<std::string, std::string> WriteLazy(const TestLayer& layer, uint32_t block_bits,
                                              const TempDir& dir) {
  auto layout = mount::erofs::PlanBlobLayout(*layer.index, block_bits);
  EXPECT_TRUE(layout.ok()) << layout.status();
  std::string image = dir.Sub("lazy.erofs"), blob = dir.Sub("blob");
  EXPECT_TRUE(mount::erofs::WriteErofsImage(*layer.index, layout->device, {}, image).ok());
  auto bytes = MaterializeBlob(layer, *layout);
  EXPECT_TRUE(bytes.ok());
  EXPECT_TRUE(WriteFile(blob, *bytes).ok());
  return {image, blob};
}

std::pair<std::string, std::string> WriteTar(const TestLayer& layer, const TempDir& dir) {
  auto offsets = TarPayloadOffsets(layer);
  EXPECT_TRUE(offsets.ok()) << offsets.status();
  auto device = mount::erofs::PlanTarLayout(*layer.index, *offsets, layer.built.tar.size());
  EXPECT_TRUE(device.ok()) << device.status();
  std::string image = dir.Sub("tar.erofs"), tar = dir.Sub("layer.tar");
  EXPECT_TRUE(mount::erofs::WriteErofsImage(*layer.index, *device, {}, image).ok());
  EXPECT_TRUE(WriteFile(tar, layer.built.tar).ok());
  return {image, tar};
}

class ErofsMountTest : public ::testing::TestWithParam<std::tuple<bool, uint32_t>> {};

TEST_P(ErofsMountTest, LazyBlobImageMountsExactTree) {
  auto [zstd, block_bits] = GetParam();
  auto layer = MakeTestLayer(RichEntries(), zstd);
  ASSERT_TRUE(layer.ok()) << layer.status();
  TempDir tmp("erofsmnt");
  auto [image, blob] = WriteLazy(*layer, block_bits, tmp);
  ::mkdir(tmp.Sub("mnt").c_str(), 0755);
  auto m = KernelErofsMount::Mount(image, blob, tmp.Sub("mnt"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(mount::erofs::IsMountOfType(tmp.Sub("mnt"), "erofs"));
  std::vector<std::string> diffs = CompareMountWithIndex(tmp.Sub("mnt"), *layer);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  ASSERT_TRUE((*m)->Unmount().ok());
  EXPECT_FALSE(mount::erofs::IsMountOfType(tmp.Sub("mnt"), "erofs"));
}

INSTANTIATE_TEST_SUITE_P(FormatsAndBlockSizes, ErofsMountTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(12u, 9u)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "ZstdChunked" : "Estargz") +
                                  (std::get<1>(info.param) == 12 ? "4K" : "512");
                         });

class ErofsTarMountTest : public ::testing::TestWithParam<bool> {};

TEST_P(ErofsTarMountTest, TarImageMountsExactTree) {
  auto layer = MakeTestLayer(RichEntries(), GetParam());
  ASSERT_TRUE(layer.ok()) << layer.status();
  TempDir tmp("erofstar");
  auto [image, tar] = WriteTar(*layer, tmp);
  ::mkdir(tmp.Sub("mnt").c_str(), 0755);
  auto m = KernelErofsMount::Mount(image, tar, tmp.Sub("mnt"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> diffs = CompareMountWithIndex(tmp.Sub("mnt"), *layer);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
}

INSTANTIATE_TEST_SUITE_P(Formats, ErofsTarMountTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "ZstdChunked" : "Estargz");
});

// A layer lazily mounted at mnt, with its tar image ready to go beneath it.
class ErofsMountBeneath : public ::testing::Test {
 protected:
  void SetUp() override {
    auto built = MakeTestLayer(RichEntries(), true);
    ASSERT_TRUE(built.ok()) << built.status();
    layer = std::move(*built);
    std::tie(lazy_image, blob) = WriteLazy(layer, 12, tmp);
    std::tie(tar_image, tar) = WriteTar(layer, tmp);
    ::mkdir(mnt.c_str(), 0755);
    auto m = KernelErofsMount::Mount(lazy_image, blob, mnt);
    ASSERT_TRUE(m.ok()) << m.status();
    lazy = std::move(*m);
  }

  TempDir tmp{"erofsbeneath"};
  TestLayer layer;
  std::string lazy_image, blob, tar_image, tar;
  const std::string mnt = tmp.Sub("mnt");
  std::unique_ptr<KernelErofsMount> lazy;
};

// Graduation's switch: the tar image goes beneath the lazy mount, the lazy one is detached;
// the path shows the new mount at once and a file opened on the old mount keeps reading.
TEST_F(ErofsMountBeneath, ReplacesTheMountAtAPathInPlace) {
  struct stat before;
  ASSERT_EQ(stat(mnt.c_str(), &before), 0);
  int old_fd = open((mnt + "/bin-data").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(old_fd, 0);

  auto graduated = KernelErofsMount::MountBeneath(tar_image, tar, mnt);
  ASSERT_TRUE(graduated.ok()) << graduated.status();
  lazy->Release();
  struct stat after;
  ASSERT_EQ(stat(mnt.c_str(), &after), 0);
  EXPECT_NE(before.st_dev, after.st_dev) << "the path still shows the old mount";
  EXPECT_TRUE(mount::erofs::IsMountOfType(mnt, "erofs"));
  std::vector<std::string> diffs = CompareMountWithIndex(mnt, layer);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  // The old mount is detached but alive for its user.
  auto want = FileContent(layer, *layer.index->LookupPath("bin-data"));
  std::string got(want->size(), '\0');
  ASSERT_EQ(pread(old_fd, got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
  EXPECT_TRUE(got == *want);
  close(old_fd);
  // Exactly one mount is left at the path.
  ASSERT_TRUE((*graduated)->Unmount().ok());
  EXPECT_FALSE(mount::erofs::IsMountOfType(mnt, "erofs"));
}

// Mounts whose mount point is exactly `path` (stacked ones counted), from /proc/self/mountinfo.
size_t MountsAt(const std::string& path) {
  auto mounts = mount::MountsUnder(path);
  EXPECT_TRUE(mounts.ok()) << mounts.status();
  size_t n = 0;
  for (const mount::MountPoint& m : mounts.ok() ? *mounts : std::vector<mount::MountPoint>{}) {
    n += m.path == path ? 1 : 0;
  }
  return n;
}

// A switch whose detach of the old mount fails leaves nothing behind: the new mount, already
// beneath the old one, is detached again, so retrying (graduation retries every check) never
// stacks mounts, and the path keeps showing the old mount.
TEST_F(ErofsMountBeneath, FailedDetachLeavesNoStackedMount) {
  struct stat before;
  ASSERT_EQ(stat(mnt.c_str(), &before), 0);
  ASSERT_EQ(MountsAt(mnt), 1u);

  int detach_calls = 0;
  auto failing_detach = [&](const std::string& target) {
    EXPECT_EQ(target, mnt);
    ++detach_calls;
    errno = EBUSY;
    return -1;
  };
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto m = KernelErofsMount::MountBeneath(tar_image, tar, mnt, failing_detach);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
    EXPECT_NE(m.status().message().find("detaching the mount above"), std::string::npos)
        << m.status();
    EXPECT_EQ(detach_calls, attempt);
    EXPECT_EQ(MountsAt(mnt), 1u) << "attempt " << attempt << " left a stacked mount";
    struct stat now;
    ASSERT_EQ(stat(mnt.c_str(), &now), 0);
    EXPECT_EQ(now.st_dev, before.st_dev) << "the path no longer shows the old mount";
  }
  std::vector<std::string> diffs = CompareMountWithIndex(mnt, layer);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  ASSERT_TRUE(lazy->Unmount().ok());
  EXPECT_EQ(MountsAt(mnt), 0u);
}

}  // namespace
}  // namespace lazypull::erofs_testing
