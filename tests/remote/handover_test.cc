// Issue 20: running readers never notice the daemon dying or being upgraded. A FUSE holder
// (lazypull-fuse-holder) keeps every lazy layer's FUSE connection; each restarted daemon adopts
// them. Readers (threads of this test reading through a container's overlay, page cache dropped
// after every read so every pass reaches the daemon) read a 64 MiB file and hash-compare every
// small file of the test image in a loop while the daemon is SIGKILLed 10 times, killed between
// a request's read and its reply (deterministic test hook), and upgraded with SIGTERM + start.
// Synchronisation is by the readers' progress counters, never by sleeping.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>

#include "mount/fuse/holder_client.h"
#include "mount/fuse/stale_mounts.h"
#include "tests/remote/remote_daemon_fixture.h"

namespace lazypull::testing {
namespace {

constexpr uint64_t kBigSize = 64ull << 20;

// The 64 MiB image, built once per binary.
absl::Status big_status = absl::UnknownError("not built");
bool big_built = false;

absl::Status EnsureBigImage() {
  if (big_built) return big_status;
  big_built = true;
  absl::StatusOr<std::string> layout =
      BuildHugeSparseLayout(images->dir.path(), kBigSize, "big-layout");
  big_status = layout.status();
  const std::string host = images->registry->host();
  if (big_status.ok()) big_status = images->registry->PushOciLayout(*layout, "v1", "big:v1");
  if (big_status.ok()) {
    big_status = LazypullConvert("estargz", host + "/big:v1", host + "/big-esgz:v1");
  }
  return big_status;
}

// Open fds of process `pid` on /dev/fuse.
int FuseFds(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code ec2;
    if (std::filesystem::read_symlink(e.path(), ec2) == "/dev/fuse") ++n;
  }
  return n;
}

// Loops over files, comparing every byte, dropping their page cache after each read.
class Reader {
 public:
  struct File {
    std::string path;
    std::string expected;
  };
  explicit Reader(std::vector<File> files) : files_(std::move(files)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Reader() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t passes() const { return passes_.load(); }
  uint64_t errors() const { return errors_.load(); }
  uint64_t wrong() const { return wrong_.load(); }
  double max_stall_seconds() const { return max_stall_ns_.load() / 1e9; }
  std::string first_error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  void Fail(std::atomic<uint64_t>& counter, const std::string& what) {
    counter.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    if (first_error_.empty()) first_error_ = what;
  }
  void Loop() {
    std::vector<char> buf(1 << 20);
    while (!stop_) {
      for (const File& f : files_) {
        int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          Fail(errors_, f.path + ": open: " + strerror(errno));
          continue;
        }
        uint64_t off = 0;
        for (;;) {
          auto t0 = std::chrono::steady_clock::now();
          ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
          int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - t0)
                           .count();
          int64_t prev = max_stall_ns_.load();
          while (ns > prev && !max_stall_ns_.compare_exchange_weak(prev, ns)) {
          }
          if (n < 0) {
            Fail(errors_, f.path + ": read: " + strerror(errno));
            break;
          }
          if (n == 0) break;
          if (off + n > f.expected.size() ||
              std::memcmp(buf.data(), f.expected.data() + off, n) != 0) {
            Fail(wrong_, absl::StrCat(f.path, ": wrong bytes at ", off));
            break;
          }
          off += n;
        }
        if (off != f.expected.size()) Fail(wrong_, absl::StrCat(f.path, ": size ", off));
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // the next pass reaches the daemon
        ::close(fd);
      }
      passes_.fetch_add(1);
    }
  }

  const std::vector<File> files_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> passes_{0}, errors_{0}, wrong_{0};
  std::atomic<int64_t> max_stall_ns_{0};
  mutable std::mutex mu_;
  std::string first_error_;
  std::thread thread_;
};

class HandoverTest : public RemoteDaemonTest {
 protected:
  void SetUp() override {
    RemoteDaemonTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(EnsureBigImage().ok()) << big_status;
    socket_ = daemon_->root() + "/fuse-holder.sock";
    auto holder = Subprocess::Start(
        {BinaryDir() + "/bin/lazypull-fuse-holder", "--socket", socket_, "--log-level", "debug"},
        tmp_.Sub("holder.log"));
    ASSERT_TRUE(holder.ok()) << holder.status();
    holder_ = std::move(*holder);
    ASSERT_TRUE(WaitUntil([&] { return mount::FuseHolderClient::Connect(socket_).ok(); }))
        << holder_.ReadLog();
    // The daemon finds the holder at start.
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  }

  void TearDown() override {
    // Without holder and daemon, blocked reads fail (ENOTCONN) instead of waiting forever.
    holder_.Kill();
    readers_.clear();
    RemoteDaemonTest::TearDown();
    if (HasFailure()) std::cerr << "--- holder log ---\n" << holder_.ReadLog();
    auto left = mount::MountsUnder(tmp_.path());
    if (left.ok()) {
      for (const auto& m : *left) ::umount2(m.path.c_str(), MNT_DETACH);
    }
  }

  // Readers of the big file and of every small file of the test image in `dir_small` /
  // `dir_big` (container roots).
  void StartReaders(const std::string& dir_small, const std::string& dir_big) {
    std::vector<Reader::File> small;
    for (const auto& e : std::filesystem::recursive_directory_iterator(images->rootfs)) {
      if (!e.is_regular_file() || e.is_symlink()) continue;
      std::string rel = std::filesystem::relative(e.path(), images->rootfs).string();
      auto content = ReadFile(e.path().string());
      ASSERT_TRUE(content.ok());
      small.push_back({dir_small + "/" + rel, *content});
    }
    ASSERT_GE(small.size(), 10u);
    readers_.push_back(std::make_unique<Reader>(std::move(small)));
    readers_.push_back(std::make_unique<Reader>(
        std::vector<Reader::File>{{dir_big + "/big/huge.bin", HugeBytes(0, kBigSize, kBigSize)}}));
  }

  // Waits until every reader completed two more passes (so the current daemon served them).
  void ExpectReadersProgress(const std::string& when) {
    std::vector<uint64_t> start;
    for (const auto& r : readers_) start.push_back(r->passes());
    bool ok = WaitUntil(
        [&] {
          for (size_t i = 0; i < readers_.size(); ++i) {
            if (readers_[i]->passes() < start[i] + 2 || readers_[i]->errors() > 0) return false;
          }
          return true;
        },
        std::chrono::seconds(180));
    EXPECT_TRUE(ok) << "readers stalled " << when;
    ExpectNoReadErrors(when);
  }
  void ExpectNoReadErrors(const std::string& when) {
    for (const auto& r : readers_) {
      EXPECT_EQ(r->errors(), 0u) << when << ": " << r->first_error();
      EXPECT_EQ(r->wrong(), 0u) << when << ": " << r->first_error();
    }
  }
  double MaxStall() const {
    double m = 0;
    for (const auto& r : readers_) m = std::max(m, r->max_stall_seconds());
    return m;
  }
  // Every lazy layer in status.json is adopted; the sum of their resent requests.
  uint64_t ExpectAllAdopted(size_t layers) {
    EXPECT_TRUE(WaitMountedLayers(layers)) << Status().dump();
    uint64_t resent = 0;
    const nlohmann::json status = Status();
    for (const auto& l : status["layers"]) {
      EXPECT_TRUE(l.value("adopted", false)) << l.dump();
      resent += l.value("resent_requests", uint64_t{0});
    }
    return resent;
  }
  size_t LazyFuseMounts() {
    auto mounts = mount::MountsUnder(daemon_->root());
    size_t n = 0;
    if (mounts.ok()) {
      for (const auto& m : *mounts) n += m.fstype == "fuse.lazypull";
    }
    return n;
  }

  std::string socket_;
  Subprocess holder_;
  std::vector<std::unique_ptr<Reader>> readers_;
};

TEST_P(HandoverTest, ReadersSurviveKillsCrashMidRequestAndUpgrade) {
  PushedImage small = Image("esgz");
  PushedImage big = Image("big-esgz");
  std::vector<std::string> small_chain = PrepareLazyChain(small, /*cri=*/false, "s");
  std::vector<std::string> big_chain = PrepareLazyChain(big, /*cri=*/false, "b");
  const size_t layers = small_chain.size() + big_chain.size();
  std::string small_dir = MountActive("small-ctr", small_chain.back());
  std::string big_dir = MountActive("big-ctr", big_chain.back());
  ASSERT_NO_FATAL_FAILURE(StartReaders(small_dir, big_dir));
  ExpectReadersProgress("before any restart");
  EXPECT_EQ(LazyFuseMounts(), layers);

  for (int i = 0; i < 10; ++i) {
    daemon_->Kill();
    ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
    client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
    ExpectReadersProgress(absl::StrCat("after kill ", i + 1));
    ExpectAllAdopted(layers);
  }
  const double kill_stall = MaxStall();
  EXPECT_EQ(LazyFuseMounts(), layers) << "adoption mounts nothing";

  // Killed between reading a request and answering it: the next daemon gets it resent.
  daemon_->options().env["LAZYPULL_TEST_CRASH_AFTER_FUSE_READS"] = "1";
  daemon_->Kill();
  daemon_->Restart().IgnoreError();  // may die before its socket is ready
  absl::StatusOr<int> exit = daemon_->WaitForExit(std::chrono::seconds(120));
  ASSERT_TRUE(exit.ok()) << exit.status();
  ASSERT_TRUE(WIFSIGNALED(*exit) && WTERMSIG(*exit) == SIGKILL) << *exit;
  daemon_->options().env.clear();
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ExpectReadersProgress("after a kill between read and reply");
  EXPECT_GE(ExpectAllAdopted(layers), 1u) << "the unanswered request was resent";

  // Upgrade: SIGTERM (finish in flight, hand over), then start.
  ASSERT_TRUE(daemon_->Restart().ok()) << daemon_->ReadLog();
  client_ = std::make_unique<SnapshotClient>(daemon_->grpc_target());
  ExpectReadersProgress("after a graceful restart");
  ExpectAllAdopted(layers);
  std::cerr << "longest read stall: " << kill_stall << " s across kills, " << MaxStall()
            << " s overall\n";

  // New containers after the last restart are exact.
  ExpectImageTree(MountActive("after-ctr", small_chain.back()));
  for (auto& r : readers_) r->Stop();
  ExpectNoReadErrors("at the end");

  // Remove everything: every mount and every held fd goes.
  readers_.clear();
  mounts_.clear();
  for (const char* key : {"small-ctr", "big-ctr", "after-ctr"})
    ASSERT_GRPC_OK(client_->Remove(key));
  for (const auto* chain : {&small_chain, &big_chain}) {
    for (auto it = chain->rbegin(); it != chain->rend(); ++it) ASSERT_GRPC_OK(client_->Remove(*it));
  }
  EXPECT_EQ(LazyFuseMounts(), 0u);
  auto holder = mount::FuseHolderClient::Connect(socket_);
  ASSERT_TRUE(holder.ok()) << holder.status();
  auto held = (*holder)->List();
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_TRUE(held->empty()) << absl::StrJoin(*held, " ");
  EXPECT_EQ(FuseFds(holder_.pid()), 0);
  EXPECT_EQ(FuseFds(daemon_->pid()), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, HandoverTest, ::testing::Values("fuse"), ParamName);

}  // namespace
}  // namespace lazypull::testing
