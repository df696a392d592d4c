// EROFS images through the real kernel (root): mount(2) of our images with the data on `device=`
// (the lazy blob layout with 4 KiB and 512-byte blocks, and the original tar with 512-byte
// blocks), compared with the index entry by entry and byte for byte; and the in-place
// replacement of a mount (MOVE_MOUNT_BENEATH) that graduation uses. Every test runs file-backed
// and through loop devices; loop devices are counted (none may outlive its mount), and a loop
// device that fails to attach leaves nothing behind.
#include <fcntl.h>
#include <linux/loop.h>
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
#include "mount/erofs/loop_device.h"
#include "mount/fuse/stale_mounts.h"
#include "tests/erofs/erofs_test_util.h"
#include "tests/harness/test_env.h"

namespace lazypull::erofs_testing {
namespace {

using mount::erofs::ErofsAttachment;
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

// The attachment under test: file-backed, or loop devices tagged as owned by `dir`.
ErofsAttachment AttachmentFor(bool loop, const TempDir& dir) {
  return ErofsAttachment{.loop = loop, .loop_owner = mount::erofs::LoopOwnerTag(dir.path())};
}

std::string AttachName(bool loop) { return loop ? "Loop" : "File"; }

class ErofsMountTest : public ::testing::TestWithParam<std::tuple<bool, uint32_t, bool>> {};

TEST_P(ErofsMountTest, LazyBlobImageMountsExactTree) {
  auto [zstd, block_bits, loop] = GetParam();
  auto layer = MakeTestLayer(RichEntries(), zstd);
  ASSERT_TRUE(layer.ok()) << layer.status();
  TempDir tmp("erofsmnt");
  auto [image, blob] = WriteLazy(*layer, block_bits, tmp);
  ::mkdir(tmp.Sub("mnt").c_str(), 0755);
  const ErofsAttachment attach = AttachmentFor(loop, tmp);
  auto m = KernelErofsMount::Mount(image, blob, tmp.Sub("mnt"), attach);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(mount::erofs::IsMountOfType(tmp.Sub("mnt"), "erofs"));
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), loop ? 2u : 0u);
  EXPECT_EQ((*m)->loop_devices().size(), loop ? 2u : 0u);
  std::vector<std::string> diffs = CompareMountWithIndex(tmp.Sub("mnt"), *layer);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  ASSERT_TRUE((*m)->Unmount().ok());
  EXPECT_FALSE(mount::erofs::IsMountOfType(tmp.Sub("mnt"), "erofs"));
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), 0u) << "a loop device outlived its mount";
}

INSTANTIATE_TEST_SUITE_P(FormatsBlockSizesAttachments, ErofsMountTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(12u, 9u),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "ZstdChunked" : "Estargz") +
                                  (std::get<1>(info.param) == 12 ? "4K" : "512") +
                                  AttachName(std::get<2>(info.param));
                         });

class ErofsTarMountTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(ErofsTarMountTest, TarImageMountsExactTree) {
  auto [zstd, loop] = GetParam();
  auto layer = MakeTestLayer(RichEntries(), zstd);
  ASSERT_TRUE(layer.ok()) << layer.status();
  TempDir tmp("erofstar");
  auto [image, tar] = WriteTar(*layer, tmp);
  ::mkdir(tmp.Sub("mnt").c_str(), 0755);
  const ErofsAttachment attach = AttachmentFor(loop, tmp);
  {
    auto m = KernelErofsMount::Mount(image, tar, tmp.Sub("mnt"), attach);
    ASSERT_TRUE(m.ok()) << m.status();
    std::vector<std::string> diffs = CompareMountWithIndex(tmp.Sub("mnt"), *layer);
    EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  }
  // The handle's destruction unmounted it, and so released its loop devices.
  EXPECT_FALSE(mount::erofs::IsMountOfType(tmp.Sub("mnt"), "erofs"));
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), 0u);
}

INSTANTIATE_TEST_SUITE_P(FormatsAttachments, ErofsTarMountTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "ZstdChunked" : "Estargz") +
                                  AttachName(std::get<1>(info.param));
                         });

// A layer lazily mounted at mnt, with its tar image ready to go beneath it; file-backed or
// through loop devices (the parameter).
class ErofsMountBeneath : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    auto built = MakeTestLayer(RichEntries(), true);
    ASSERT_TRUE(built.ok()) << built.status();
    layer = std::move(*built);
    std::tie(lazy_image, blob) = WriteLazy(layer, 12, tmp);
    std::tie(tar_image, tar) = WriteTar(layer, tmp);
    ::mkdir(mnt.c_str(), 0755);
    auto m = KernelErofsMount::Mount(lazy_image, blob, mnt, attach);
    ASSERT_TRUE(m.ok()) << m.status();
    lazy = std::move(*m);
  }
  void TearDown() override {
    lazy.reset();
    EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), 0u) << "a loop device outlived its mount";
  }

  TempDir tmp{"erofsbeneath"};
  const ErofsAttachment attach = AttachmentFor(GetParam(), tmp);
  TestLayer layer;
  std::string lazy_image, blob, tar_image, tar;
  const std::string mnt = tmp.Sub("mnt");
  std::unique_ptr<KernelErofsMount> lazy;
};

// Graduation's switch: the tar image goes beneath the lazy mount, the lazy one is detached;
// the path shows the new mount at once and a file opened on the old mount keeps reading.
TEST_P(ErofsMountBeneath, ReplacesTheMountAtAPathInPlace) {
  struct stat before;
  ASSERT_EQ(stat(mnt.c_str(), &before), 0);
  int old_fd = open((mnt + "/bin-data").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(old_fd, 0);

  auto graduated = KernelErofsMount::MountBeneath(tar_image, tar, mnt, attach);
  ASSERT_TRUE(graduated.ok()) << graduated.status();
  lazy->Release();
  // The detached lazy mount keeps its loop devices while a file of it is open.
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), GetParam() ? 4u : 0u);
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
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), GetParam() ? 2u : 0u);
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
TEST_P(ErofsMountBeneath, FailedDetachLeavesNoStackedMount) {
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
    auto m = KernelErofsMount::MountBeneath(tar_image, tar, mnt, attach, failing_detach);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
    EXPECT_NE(m.status().message().find("detaching the mount above"), std::string::npos)
        << m.status();
    EXPECT_EQ(detach_calls, attempt);
    EXPECT_EQ(MountsAt(mnt), 1u) << "attempt " << attempt << " left a stacked mount";
    EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), GetParam() ? 2u : 0u);
    struct stat now;
    ASSERT_EQ(stat(mnt.c_str(), &now), 0);
    EXPECT_EQ(now.st_dev, before.st_dev) << "the path no longer shows the old mount";
  }
  std::vector<std::string> diffs = CompareMountWithIndex(mnt, layer);
  EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  ASSERT_TRUE(lazy->Unmount().ok());
  EXPECT_EQ(MountsAt(mnt), 0u);
}

INSTANTIATE_TEST_SUITE_P(Attachments, ErofsMountBeneath, ::testing::Bool(),
                         [](const auto& info) { return AttachName(info.param); });

// Loop system calls that fail the `fail_at`-th LOOP_CONFIGURE with `err` (1-based; 0 = none),
// as the kernel would.
class FaultLoopSyscalls : public mount::erofs::LoopSyscalls {
 public:
  FaultLoopSyscalls(int fail_at, int err) : fail_at_(fail_at), err_(err) {}
  int Ioctl(int fd, unsigned long request, void* arg) override {
    if (request == LOOP_CONFIGURE && ++configures_ == fail_at_) {
      errno = err_;
      return -1;
    }
    return LoopSyscalls::Ioctl(fd, request, arg);
  }
  int configures() const { return configures_; }

 private:
  const int fail_at_, err_;
  int configures_ = 0;
};

// The data device's loop device fails to attach: the mount fails with that error and the image's
// loop device, already attached, is gone too.
TEST(LoopDeviceTest, AFailedAttachLeavesNoLoopDevice) {
  auto layer = MakeTestLayer(RichEntries(), true);
  ASSERT_TRUE(layer.ok()) << layer.status();
  TempDir tmp("erofsloopfault");
  auto [image, blob] = WriteLazy(*layer, 12, tmp);
  ::mkdir(tmp.Sub("mnt").c_str(), 0755);
  FaultLoopSyscalls fault(/*fail_at=*/2, ENOMEM);
  ErofsAttachment attach = AttachmentFor(true, tmp);
  attach.loop_syscalls = &fault;
  auto m = KernelErofsMount::Mount(image, blob, tmp.Sub("mnt"), attach);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted) << m.status();
  EXPECT_NE(m.status().message().find("LOOP_CONFIGURE"), std::string::npos) << m.status();
  EXPECT_NE(m.status().message().find(blob), std::string::npos) << m.status();
  EXPECT_EQ(fault.configures(), 2);
  EXPECT_FALSE(mount::erofs::IsMountOfType(tmp.Sub("mnt"), "erofs"));
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), 0u);
}

// A device another process took between LOOP_CTL_GET_FREE and LOOP_CONFIGURE (EBUSY) is skipped
// for the next free one; an image the kernel rejects leaves no loop device either.
TEST(LoopDeviceTest, ABusyDeviceIsRetriedAndARejectedImageLeavesNoLoopDevice) {
  auto layer = MakeTestLayer(RichEntries(), false);
  ASSERT_TRUE(layer.ok()) << layer.status();
  TempDir tmp("erofsloopbusy");
  auto [image, blob] = WriteLazy(*layer, 12, tmp);
  ::mkdir(tmp.Sub("mnt").c_str(), 0755);
  FaultLoopSyscalls busy(/*fail_at=*/1, EBUSY);
  ErofsAttachment attach = AttachmentFor(true, tmp);
  attach.loop_syscalls = &busy;
  {
    auto m = KernelErofsMount::Mount(image, blob, tmp.Sub("mnt"), attach);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(busy.configures(), 3);
    std::vector<std::string> diffs = CompareMountWithIndex(tmp.Sub("mnt"), *layer);
    EXPECT_TRUE(diffs.empty()) << absl::StrJoin(diffs, "\n");
  }
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), 0u);
  ASSERT_TRUE(WriteFile(tmp.Sub("garbage.erofs"), std::string(8192, 'x')).ok());
  attach.loop_syscalls = nullptr;
  auto bad = KernelErofsMount::Mount(tmp.Sub("garbage.erofs"), blob, tmp.Sub("mnt"), attach);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_EQ(OwnedLoopDevices(attach.loop_owner), 0u);
}

// Loop devices of a daemon's owner tag left bound (here: attached without autoclear, as a tool
// clearing the flag could leave them) are detached by DetachStaleLoopDevices at the next start;
// other owners' devices stay.
TEST(LoopDeviceTest, StaleDevicesOfAnOwnerAreDetached) {
  struct NoAutoclear : mount::erofs::LoopSyscalls {
    int Ioctl(int fd, unsigned long request, void* arg) override {
      if (request == LOOP_CONFIGURE) {
        static_cast<loop_config*>(arg)->info.lo_flags &= ~LO_FLAGS_AUTOCLEAR;
      }
      return LoopSyscalls::Ioctl(fd, request, arg);
    }
  } no_autoclear;
  TempDir tmp("erofsloopstale");
  ASSERT_TRUE(WriteFile(tmp.Sub("a"), std::string(4096, 'a')).ok());
  const std::string mine = mount::erofs::LoopOwnerTag(tmp.Sub("mine"));
  const std::string other = mount::erofs::LoopOwnerTag(tmp.Sub("other"));
  for (const std::string& owner : {mine, other}) {
    auto dev = mount::erofs::LoopDevice::Attach(tmp.Sub("a"), owner, &no_autoclear);
    ASSERT_TRUE(dev.ok()) << dev.status();
  }
  EXPECT_EQ(OwnedLoopDevices(mine), 1u) << "closed without autoclear: still bound";
  EXPECT_EQ(OwnedLoopDevices(other), 1u);
  EXPECT_EQ(mount::erofs::DetachStaleLoopDevices(mine), 1u);
  EXPECT_EQ(OwnedLoopDevices(mine), 0u);
  EXPECT_EQ(OwnedLoopDevices(other), 1u);
  EXPECT_EQ(mount::erofs::DetachStaleLoopDevices(other), 1u);
  EXPECT_EQ(OwnedLoopDevices(other), 0u);
}

}  // namespace
}  // namespace lazypull::erofs_testing
