// What the FUSE backend negotiates with the kernel, checked from outside (label root): the
// mount's options in /proc/self/mountinfo, its readahead, and which requests still reach the
// daemon once the kernel caches what an immutable layer lets it cache (requests counted by an
// FsOpObserver). A real eStargz layer built from a real tree, mounted with the backend's
// default options.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fetcher/cache/chunk_cache.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mount/backend.h"
#include "tests/fuse/estargz_test_layer.h"
#include "tests/fuse/file_test_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using ::lazypull::testing::BuildEstargzTestLayer;
using ::lazypull::testing::OpCounter;
using ::lazypull::testing::RandomBytes;
using ::lazypull::testing::ReadFile;
using ::lazypull::testing::RunCommand;
using ::lazypull::testing::TempDir;
using ::lazypull::testing::WaitUntil;
using ::lazypull::testing::WriteFile;
using ::testing::Contains;
using ::testing::IsEmpty;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_TRUE(in.good() || in.eof()) << path;
  return ss.str();
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, sep);) out.push_back(part);
  return out;
}

// The mountinfo fields of the mount at `target`: {mount options, fs type, super options}.
struct MountInfo {
  std::vector<std::string> mount_options;
  std::string fstype;
  std::vector<std::string> super_options;
};
std::optional<MountInfo> FindMount(const std::string& target) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f = Split(line, ' ');
    if (f.size() < 10 || f[4] != target) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 3 >= f.size()) return std::nullopt;
    return MountInfo{Split(f[5], ','), f[dash + 1], Split(f[dash + 3], ',')};
  }
  return std::nullopt;
}

class FuseKernelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string src = tmp_.Sub("src");
    fs::create_directories(src + "/dir/sub");
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(WriteFile(src + "/dir/f" + std::to_string(i), RandomBytes(1000 + i, i)).ok());
    }
    ASSERT_TRUE(WriteFile(src + "/dir/sub/deep", "deep\n").ok());
    ASSERT_TRUE(WriteFile(src + "/big.bin", RandomBytes(3 << 20, 99)).ok());
    ASSERT_EQ(symlink("dir/f1", (src + "/link").c_str()), 0);
    auto layer = BuildEstargzTestLayer(src, tmp_.path(), 256 << 10);
    ASSERT_TRUE(layer.ok()) << layer.status();
    CacheConfig cc;
    cc.dir = tmp_.Sub("cache");
    auto cache = ChunkCache::Open(cc);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
    LayerReaderOptions ro;
    ro.prefetch = false;
    ro.background_fetch = false;
    auto reader =
        LayerReader::Create("sha256:kernelcache", layer->index, layer->blob, cache_.get(), ro);
    ASSERT_TRUE(reader.ok()) << reader.status();
    mount::MountConfig config;
    config.backend = mount::BackendKind::kFuse;
    config.fuse.op_observer = counter_;
    auto backend = mount::NewLayerMountBackend(config);
    ASSERT_TRUE(backend.ok()) << backend.status();
    fs::create_directories(mnt_);
    auto mounted = (*backend)->Mount({"sha256:kernelcache", std::move(*reader), mnt_});
    ASSERT_TRUE(mounted.ok()) << mounted.status();
    layer_ = std::move(*mounted);
  }

  std::string Src() const { return tmp_.Sub("src"); }

  // The requests counted since the last call. A request is counted right after its reply, so
  // its count can land a moment after the syscall that caused it returned: first wait for the
  // counts in `at_least` and for a barrier request (a STATFS, which nothing else sends and the
  // kernel never caches), then take the counts without the barrier.
  std::map<std::string, int> Settle(const std::map<std::string, int>& at_least = {}) {
    struct statvfs sv;
    EXPECT_EQ(statvfs(mnt_.c_str(), &sv), 0);
    EXPECT_TRUE(WaitUntil([&] {
      std::map<std::string, int> c = counter_->Peek();
      if (c["statfs"] < 1) return false;
      for (const auto& [op, n] : at_least) {
        if (c[op] < n) return false;
      }
      return true;
    }));
    std::map<std::string, int> c = counter_->Take();
    EXPECT_EQ(c["statfs"], 1);
    c.erase("statfs");
    return c;
  }

  TempDir tmp_{"lazypull-fuse-kernel-cache"};
  const std::string mnt_ = tmp_.Sub("mnt");
  std::shared_ptr<OpCounter> counter_ = std::make_shared<OpCounter>();
  std::unique_ptr<ChunkCache> cache_;
  std::unique_ptr<mount::MountedLayer> layer_;
};

TEST_F(FuseKernelCacheTest, MountOptionsAndReadahead) {
  std::optional<MountInfo> info = FindMount(mnt_);
  ASSERT_TRUE(info.has_value()) << mnt_ << " not in /proc/self/mountinfo";
  EXPECT_EQ(info->fstype, "fuse.lazypull");
  EXPECT_THAT(info->mount_options, Contains("ro"));
  EXPECT_THAT(info->super_options, Contains("default_permissions"));
  EXPECT_THAT(info->super_options, Contains("allow_other"));
  EXPECT_THAT(info->super_options, Contains("max_read=786432"));
  // Readahead above max_read: a sequential read keeps several requests in flight.
  struct stat st;
  ASSERT_EQ(stat(mnt_.c_str(), &st), 0);
  auto ra = ReadFile("/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                     std::to_string(minor(st.st_dev)) + "/read_ahead_kb");
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_EQ(*ra, "4096\n");
}

// Layers are immutable: after the first look, the kernel answers walks, stats, opens,
// re-reads, symlinks and xattr probes itself.
TEST_F(FuseKernelCacheTest, KernelCachesWhatAnImmutableLayerAllows) {
  // The first open, opendir and getxattr are answered ENOSYS once for the whole mount.
  ASSERT_EQ(ReadAll(mnt_ + "/dir/f0"), ReadAll(Src() + "/dir/f0"));
  ASSERT_EQ(fs::is_empty(mnt_ + "/dir/sub"), false);
  char value[16];
  EXPECT_EQ(lgetxattr((mnt_ + "/dir/f0").c_str(), "user.x", value, sizeof(value)), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  std::map<std::string, int> first =
      Settle({{"lookup", 3}, {"open", 1}, {"opendir", 1}, {"getxattr", 1}});
  EXPECT_EQ(first["lookup"], 3);  // dir, dir/f0, dir/sub
  EXPECT_EQ(first["open"], 1);
  EXPECT_EQ(first["opendir"], 1);
  EXPECT_EQ(first["getxattr"], 1);

  // A walk: one READDIRPLUS per directory batch gives every entry's attributes; no lookup or
  // getattr per entry, no OPENDIR.
  size_t entries = 0;
  for (auto it = fs::recursive_directory_iterator(mnt_); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st;
    ASSERT_EQ(lstat(it->path().c_str(), &st), 0) << it->path();
    ++entries;
  }
  EXPECT_EQ(entries, 25u);  // dir, dir/sub, dir/sub/deep, dir/f0..f19, big.bin, link
  std::map<std::string, int> walk = Settle({{"readdirplus", 3}});
  EXPECT_GE(walk["readdirplus"], 3);  // /, dir, dir/sub
  EXPECT_EQ(walk.count("readdir"), 0u);
  EXPECT_EQ(walk.count("lookup"), 0u);
  EXPECT_EQ(walk.count("getattr"), 0u);
  EXPECT_EQ(walk.count("opendir"), 0u);

  // A second walk and stats: nothing reaches the daemon.
  for (auto it = fs::recursive_directory_iterator(mnt_); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st;
    ASSERT_EQ(lstat(it->path().c_str(), &st), 0) << it->path();
  }
  EXPECT_THAT(Settle(), IsEmpty());

  // Reads: the first read of big.bin asks the daemon; re-reads (new opens) come from the
  // kernel's page cache, and no OPEN/RELEASE round trips happen at all.
  const std::string want = ReadAll(Src() + "/big.bin");
  ASSERT_EQ(ReadAll(mnt_ + "/big.bin"), want);
  std::map<std::string, int> read1 = Settle({{"read", 1}});
  EXPECT_GE(read1["read"], 1);
  EXPECT_EQ(read1.count("open"), 0u);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(ReadAll(mnt_ + "/big.bin"), want);
  EXPECT_THAT(Settle(), IsEmpty());

  // Symlinks are cached; xattr probes are answered by the kernel.
  EXPECT_EQ(fs::read_symlink(mnt_ + "/link"), "dir/f1");
  EXPECT_EQ(fs::read_symlink(mnt_ + "/link"), "dir/f1");
  EXPECT_EQ(lgetxattr((mnt_ + "/big.bin").c_str(), "trusted.overlay.opaque", value, sizeof(value)),
            -1);
  std::map<std::string, int> rest = Settle({{"readlink", 1}});
  EXPECT_EQ(rest["readlink"], 1);
  EXPECT_EQ(rest.count("getxattr"), 0u);
}

// Opens for writing are refused by the read-only mount itself (no OPEN reaches the daemon to
// refuse them), as before.
TEST_F(FuseKernelCacheTest, WriteOpensFailWithErofs) {
  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND}) {
    int fd = open((mnt_ + "/dir/f2").c_str(), flags | O_CLOEXEC);
    EXPECT_EQ(fd, -1) << flags;
    EXPECT_EQ(errno, EROFS) << flags;
    if (fd >= 0) close(fd);
  }
  EXPECT_EQ(open((mnt_ + "/new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(ReadAll(mnt_ + "/dir/f2"), ReadAll(Src() + "/dir/f2"));
}

}  // namespace
}  // namespace lazypull
