// The fixture of tests/remote/handover_test and bench/handover (issue 20): RemoteDaemonTest
// (the real daemon, the backend under test, background fetch off, a registry behind the fault
// proxy) plus
// a lazypull-fuse-holder on the daemon root's default socket, a 64 MiB one-layer image and
// HandoverReaders through container overlays. One binary per including file.
#ifndef LAZYPULL_TESTS_REMOTE_HANDOVER_FIXTURE_H_
#define LAZYPULL_TESTS_REMOTE_HANDOVER_FIXTURE_H_

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mount/fuse/holder_client.h"
#include "mount/fuse/stale_mounts.h"
#include "tests/remote/handover_reader.h"
#include "tests/remote/remote_daemon_fixture.h"

namespace lazypull::testing {

inline constexpr uint64_t kBigSize = 64ull << 20;

// The 64 MiB image, built once per binary.
inline absl::Status big_status = absl::UnknownError("not built");
inline bool big_built = false;

inline absl::Status EnsureBigImage() {
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
inline int FuseFds(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code ec2;
    if (std::filesystem::read_symlink(e.path(), ec2) == "/dev/fuse") ++n;
  }
  return n;
}

class HandoverTest : public RemoteDaemonTest {
 protected:
  // The daemon's [mount] keys beyond the backend.
  virtual std::string MountConfig() const {
    return "background_fetch = false\ngraduation = false\n";
  }

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
    // The daemon finds the holder at start. Readers read every byte, which would graduate
    // EROFS layers to local copies: they must stay lazy here.
    ASSERT_TRUE(
        WriteFile(tmp_.path() + "/config.toml", DaemonConfig(GetParam(), MountConfig())).ok());
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
    std::vector<HandoverReader::File> small;
    for (const auto& e : std::filesystem::recursive_directory_iterator(images->rootfs)) {
      if (!e.is_regular_file() || e.is_symlink()) continue;
      std::string rel = std::filesystem::relative(e.path(), images->rootfs).string();
      auto content = ReadFile(e.path().string());
      ASSERT_TRUE(content.ok());
      small.push_back({dir_small + "/" + rel, *content});
    }
    ASSERT_GE(small.size(), 10u);
    readers_.push_back(std::make_unique<HandoverReader>(std::move(small)));
    readers_.push_back(std::make_unique<HandoverReader>(std::vector<HandoverReader::File>{
        {dir_big + "/big/huge.bin", HugeBytes(0, kBigSize, kBigSize)}}));
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
    // The current daemon's status (not one its predecessor left).
    EXPECT_TRUE(WaitUntil([&] {
      nlohmann::json st = Status();
      return st.is_object() && st.value("pid", 0) == daemon_->pid() && st.contains("layers") &&
             st["layers"].size() == layers;
    })) << Status().dump();
    uint64_t resent = 0;
    const nlohmann::json status = Status();
    for (const auto& l : status["layers"]) {
      EXPECT_TRUE(l.value("adopted", false)) << l.dump();
      resent += l.value("resent_requests", uint64_t{0});
    }
    return resent;
  }
  // Lazy layer mounts (of the backend under test) under the daemon's snapshots.
  size_t LazyMounts() { return LazyMountDevs().size(); }
  // st_dev of every lazy layer mount, by target: a mount made again gets a new one.
  std::map<std::string, dev_t> LazyMountDevs() {
    std::map<std::string, dev_t> out;
    auto mounts = mount::MountsUnder(daemon_->root() + "/snapshots");
    if (!mounts.ok()) return out;
    for (const auto& m : *mounts) {
      struct stat st;
      if (m.fstype == LazyFsType() && ::stat(m.path.c_str(), &st) == 0) out[m.path] = st.st_dev;
    }
    return out;
  }
  // Processes of other mount namespaces with a mount of `device` (" held by pid P (cmd) ..."):
  // a namespace created (unshare, `ip netns exec`, a container) while the daemon's mount existed
  // keeps a private copy of it, and so its loop devices, until that namespace lets go.
  static std::string MountNamespacesHolding(const std::string& device) {
    std::string out;
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/ns/mnt", ec);
    std::set<std::string> seen;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string pid = e.path().filename().string();
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      std::error_code ec2;
      const auto ns = std::filesystem::read_symlink(e.path() / "ns/mnt", ec2);
      if (ec2 || ns == self || !seen.insert(ns.string()).second) continue;
      absl::StatusOr<std::string> info = ReadFile(e.path().string() + "/mountinfo");
      if (!info.ok() || !absl::StrContains(*info, " " + device + " ")) continue;
      absl::StatusOr<std::string> cmd = ReadFile(e.path().string() + "/cmdline");
      std::string c = cmd.ok() ? *cmd : "";
      std::replace(c.begin(), c.end(), '\0', ' ');
      absl::StrAppend(&out, " held by pid ", pid, " (", c.substr(0, 80), ")");
    }
    return out;
  }

  // This daemon's bound loop devices, one "device backing-file (name)" per line (for failures).
  std::string LoopDevicesText() const {
    const std::string root = daemon_->root();
    const std::string owner = mount::erofs::LoopOwnerTag(root + "/erofs");
    std::string out = absl::StrCat(DaemonLoopDevices(root), " loop devices:\n");
    for (const auto& d : mount::erofs::ListLoopDevices()) {
      if (mount::erofs::IsOwnedLoopDevice(d, owner) || d.backing_file.rfind(root + "/", 0) == 0) {
        absl::StrAppend(&out, d.path, " ", d.backing_file, " (", d.file_name, ")",
                        MountNamespacesHolding(d.path), "\n");
      }
    }
    return out;
  }
  // The FUSE holder keys the daemon keeps besides its layers' own: the EROFS blob file system.
  std::vector<std::string> SharedHeldKeys() const {
    if (GetParam() == "fuse") return {};
    return {daemon_->root() + "/erofs/blobs"};
  }

  // The two images ("esgz", "big-esgz") prepared as lazy chains, a container on each
  // ("small-ctr", "big-ctr") and StartReaders through them.
  struct TwoImageReaders {
    PushedImage small;
    PushedImage big;
    std::vector<std::string> small_chain;
    std::vector<std::string> big_chain;
    size_t layers = 0;  // of both chains
  };
  void StartTwoImageReaders(TwoImageReaders* out) {
    out->small = Image("esgz");
    out->big = Image("big-esgz");
    out->small_chain = PrepareLazyChain(out->small, /*cri=*/false, "s");
    out->big_chain = PrepareLazyChain(out->big, /*cri=*/false, "b");
    out->layers = out->small_chain.size() + out->big_chain.size();
    const std::string small_dir = MountActive("small-ctr", out->small_chain.back());
    const std::string big_dir = MountActive("big-ctr", out->big_chain.back());
    ASSERT_NO_FATAL_FAILURE(StartReaders(small_dir, big_dir));
  }

  // Kills the daemon, starts one that dies (SIGKILL, by a test hook) right after reading a FUSE
  // request and before answering it, then starts a normal one: the readers must go on.
  void KillBetweenReadAndReply() {
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
  }

  // Stops the readers, removes the containers `active_keys` and then each chain top-down, and
  // checks nothing is left: no lazy layer mount, no loop device, the holder keeps only
  // SharedHeldKeys() (one fd each in it and in the daemon), and the blob file system (if any)
  // holds no blob file.
  void RemoveAllExpectNothingLeft(const std::vector<std::string>& active_keys,
                                  const std::vector<const std::vector<std::string>*>& chains) {
    readers_.clear();
    mounts_.clear();
    for (const std::string& key : active_keys) ASSERT_GRPC_OK(client_->Remove(key));
    for (const auto* chain : chains) {
      for (auto it = chain->rbegin(); it != chain->rend(); ++it) {
        ASSERT_GRPC_OK(client_->Remove(*it));
      }
    }
    EXPECT_EQ(LazyMounts(), 0u);
    EXPECT_TRUE(WaitUntil([&] { return DaemonLoopDevices(daemon_->root()) == 0; }))
        << LoopDevicesText() << "left at the end";
    auto holder = mount::FuseHolderClient::Connect(socket_);
    ASSERT_TRUE(holder.ok()) << holder.status();
    auto held = (*holder)->List();
    ASSERT_TRUE(held.ok()) << held.status();
    EXPECT_EQ(*held, SharedHeldKeys()) << absl::StrJoin(*held, " ");
    const int shared = static_cast<int>(SharedHeldKeys().size());
    EXPECT_EQ(FuseFds(holder_.pid()), shared);
    EXPECT_EQ(FuseFds(daemon_->pid()), shared);
    if (shared > 0) {
      std::error_code ec;
      EXPECT_TRUE(std::filesystem::is_empty(SharedHeldKeys()[0], ec)) << ec.message();
    }
  }

  std::string socket_;
  Subprocess holder_;
  std::vector<std::unique_ptr<HandoverReader>> readers_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_REMOTE_HANDOVER_FIXTURE_H_
