// Bounded memory (label root): an eStargz layer whose 2 GiB file is ONE chunk (legal: no
// chunkSize in the TOC) is read through the real daemon — 1 byte at the start, 4 KiB in the
// middle, the last byte — and each read keeps the daemon's peak RSS growth under 256 MB (the
// chunk streams through a verified temp file instead of memory), with exact bytes.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/snapshotter_process.h"
#include "tests/harness/test_env.h"
#include "tests/remote/remote_test_util.h"
#include "tests/server/snapshot_test_util.h"

namespace lazypull::testing {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSize = 2ull << 30;
constexpr uint64_t kBudget = 256ull << 20;

// VmHWM / VmRSS of `pid` in bytes (0 if unreadable).
uint64_t StatusBytes(int pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, key + ":")) continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t kb = 0;
    if (f.size() >= 2 && absl::SimpleAtoi(f[1], &kb)) return kb << 10;
  }
  return 0;
}

// Resets the process's peak RSS (VmHWM) to its current RSS.
void ResetPeak(int pid) { std::ofstream("/proc/" + std::to_string(pid) + "/clear_refs") << "5"; }

std::string ReadAt(const std::string& path, uint64_t offset, size_t n) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<open failed>";
  std::string buf(n, '\0');
  ssize_t got = ::pread(fd, buf.data(), n, static_cast<off_t>(offset));
  ::close(fd);
  if (got < 0) return "<read failed>";
  buf.resize(static_cast<size_t>(got));
  return buf;
}

TEST(BoundedMemoryTest, UnchunkedTwoGiBFileReadsWithBoundedDaemonMemory) {
  TempDir tmp("lpmem");
  auto reg = RegistryProcess::Start(tmp.Sub("reg"));
  ASSERT_TRUE(reg.ok()) << reg.status();
  auto layout = BuildHugeSparseLayout(tmp.path(), kSize, "unchunked-layout");
  ASSERT_TRUE(layout.ok()) << layout.status();
  const std::string host = (*reg)->host();
  ASSERT_TRUE((*reg)->PushOciLayout(*layout, "v1", "src:v1").ok());
  fs::remove_all(*layout);
  // A chunk size above the file's: the whole file is one gzip member and one TOC chunk.
  ASSERT_TRUE(LazypullConvert("estargz", host + "/src:v1", host + "/esgz:v1",
                              "--chunk-size 4294967296 --level 1")
                  .ok());
  auto image = ResolvePushed(host + "/esgz:v1");
  ASSERT_TRUE(image.ok()) << image.status();

  SnapshotterOptions options;
  options.config_toml = "[mount]\nbackground_fetch = false\nfetch_timeout = \"5m\"\n";
  auto daemon = SnapshotterProcess::Start(tmp.Sub("daemon"), options);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  SnapshotClient client((*daemon)->grpc_target());
  ASSERT_EQ(client.Prepare("x-0", "", StargzLabels(*image, 0, "layer-0")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  MountList mounts;
  ASSERT_TRUE(client.Prepare("container", "layer-0", {}, &mounts).ok());
  const std::string dir = tmp.Sub("mnt");
  fs::create_directories(dir);
  auto m = ScopedMount::Mount(mounts, dir);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string path = dir + "/big/huge.bin";
  ASSERT_EQ(fs::file_size(path), kSize);

  const int pid = (*daemon)->pid();
  for (uint64_t offset : {uint64_t{0}, kSize / 2 - 2048, kSize - 1}) {
    const size_t n = offset == kSize / 2 - 2048 ? 4096 : 1;
    const uint64_t before = StatusBytes(pid, "VmRSS");
    ResetPeak(pid);
    EXPECT_EQ(ReadAt(path, offset, n), HugeBytes(offset, n, kSize)) << "at " << offset;
    const uint64_t peak = StatusBytes(pid, "VmHWM");
    ASSERT_GT(peak, 0u);
    EXPECT_LT(peak - std::min(peak, before), kBudget)
        << "reading " << n << " byte(s) at " << offset << " grew the daemon's RSS from " << before
        << " to a peak of " << peak;
  }
  m->reset();
  absl::Status stopped = (*daemon)->Stop();
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << (*daemon)->ReadLog();
}

}  // namespace
}  // namespace lazypull::testing
