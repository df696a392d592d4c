// The FUSE holder (tools/fuse_holder/) and its protocol (mount/fuse/holder_protocol.h), in
// process: a FuseHolder on a temp socket served by a thread, a FuseHolderClient talking to it.
// Held "connections" here are pipe ends: what the holder does with them (keep, dup, drop when
// the peer ends, POLLERR) is the same as with /dev/fuse fds.
#include "tools/fuse_holder/fuse_holder.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "base/unique_fd.h"
#include "gtest/gtest.h"
#include "mount/fuse/holder_client.h"
#include "mount/fuse/holder_protocol.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

using mount::FuseHolderClient;
using mount::HolderMessage;
using mount::HolderOp;

ino_t InodeOf(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

class FuseHolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = tmp_.Sub("holder.sock");
    auto holder = fuse_holder::FuseHolder::Listen(socket_);
    ASSERT_TRUE(holder.ok()) << holder.status();
    holder_ = std::move(*holder);
    stop_.Reset(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { run_status_ = holder_->Run(stop_.get()); });
  }
  void TearDown() override {
    const uint64_t one = 1;
    ASSERT_EQ(::write(stop_.get(), &one, sizeof(one)), 8);
    thread_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_;
  }

  TempDir tmp_{"lpholder"};
  std::string socket_;
  std::unique_ptr<fuse_holder::FuseHolder> holder_;
  UniqueFd stop_;
  std::thread thread_;
  absl::Status run_status_;
};

TEST_F(FuseHolderTest, KeepsHandsOutAndForgetsConnections) {
  auto client = FuseHolderClient::Connect(socket_);
  ASSERT_TRUE(client.ok()) << client.status();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  const std::string init(104, 'I');
  ASSERT_TRUE((*client)->Put("/mnt/a", write_end.get(), init).ok());
  const ino_t ino = InodeOf(write_end.get());
  write_end.Reset();  // the holder's copy keeps the pipe's write side open

  auto held = (*client)->Get("/mnt/a");
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->init_request, init);
  EXPECT_EQ(InodeOf(held->fd.get()), ino);
  EXPECT_EQ(::write(held->fd.get(), "x", 1), 1);
  char c;
  EXPECT_EQ(::read(read_end.get(), &c, 1), 1);
  held->fd.Reset();

  EXPECT_EQ((*client)->Get("/mnt/b").status().code(), absl::StatusCode::kNotFound);
  auto keys = (*client)->List();
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, std::vector<std::string>{"/mnt/a"});

  ASSERT_TRUE((*client)->Forget("/mnt/a").ok());
  ASSERT_TRUE((*client)->Forget("/mnt/a").ok()) << "forgetting twice is fine";
  keys = (*client)->List();
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty());
  // The holder closed its copy: the pipe has no writer left.
  EXPECT_EQ(::read(read_end.get(), &c, 1), 0);
}

// A connection that ended (here: the pipe's reader went away → POLLERR on the writer) is
// dropped by the holder itself.
TEST_F(FuseHolderTest, DropsAConnectionThatEnded) {
  auto client = FuseHolderClient::Connect(socket_);
  ASSERT_TRUE(client.ok()) << client.status();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  ASSERT_TRUE((*client)->Put("/mnt/gone", write_end.get(), "init").ok());
  write_end.Reset();
  read_end.Reset();
  EXPECT_TRUE(WaitUntil([&] {
    auto keys = (*client)->List();
    return keys.ok() && keys->empty();
  }));
}

TEST_F(FuseHolderTest, SecondHolderOnTheSameSocketIsRefused) {
  auto second = fuse_holder::FuseHolder::Listen(socket_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
}

// Malformed packets are refused with DataLoss (and any fd that came with them is closed);
// a closed peer is Unavailable; a bad request gets an error answer, not a dead holder.
TEST(HolderProtocolTest, MalformedPacketsAreRefused) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  for (const std::string& packet :
       {std::string("short"), std::string(16, '\0'), std::string(20, 'x')}) {
    ASSERT_EQ(::send(a.get(), packet.data(), packet.size(), 0),
              static_cast<ssize_t>(packet.size()));
    EXPECT_EQ(mount::RecvHolderMessage(b.get()).status().code(), absl::StatusCode::kDataLoss)
        << packet.size();
  }
  // Lengths that do not add up to the packet.
  HolderMessage m;
  m.op = HolderOp::kGet;
  m.key = "/k";
  ASSERT_TRUE(mount::SendHolderMessage(a.get(), m).ok());
  auto ok = mount::RecvHolderMessage(b.get());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->op, HolderOp::kGet);
  EXPECT_EQ(ok->key, "/k");
  std::string packet(16 + 2, '\0');
  uint32_t header[4] = {0x48465046, 2, 100, 0};  // claims a 100-byte key
  std::memcpy(packet.data(), header, sizeof(header));
  ASSERT_EQ(::send(a.get(), packet.data(), packet.size(), 0), static_cast<ssize_t>(packet.size()));
  EXPECT_EQ(mount::RecvHolderMessage(b.get()).status().code(), absl::StatusCode::kDataLoss);
  m.key = std::string(mount::kHolderMaxKey + 1, 'k');
  EXPECT_EQ(mount::SendHolderMessage(a.get(), m).code(), absl::StatusCode::kInvalidArgument);
  a.Reset();
  EXPECT_EQ(mount::RecvHolderMessage(b.get()).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace lazypull::testing
