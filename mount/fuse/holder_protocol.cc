#include "mount/fuse/holder_protocol.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "fmt/format.h"

namespace lazypull::mount {
namespace {

constexpr uint32_t kMagic = 0x48465046;  // "FPFH"

struct Header {
  uint32_t magic;
  uint32_t op;
  uint32_t key_len;
  uint32_t data_len;
};

}  // namespace

absl::Status SendHolderMessage(int sock, const HolderMessage& m) {
  if (m.key.size() > kHolderMaxKey || m.data.size() > kHolderMaxData) {
    return absl::InvalidArgumentError(fmt::format(
        "holder message too large (key {} bytes, data {} bytes)", m.key.size(), m.data.size()));
  }
  Header h{kMagic, static_cast<uint32_t>(m.op), static_cast<uint32_t>(m.key.size()),
           static_cast<uint32_t>(m.data.size())};
  std::string packet(reinterpret_cast<const char*>(&h), sizeof(h));
  packet += m.key;
  packet += m.data;
  iovec iov{packet.data(), packet.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (m.fd.valid()) {
    std::memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    const int fd = m.fd.get();
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(packet.size())) return absl::OkStatus();
    if (n < 0 && errno == EINTR) continue;
    return absl::UnavailableError(
        fmt::format("sending to the FUSE holder: {}", n < 0 ? strerror(errno) : "short write"));
  }
}

absl::StatusOr<HolderMessage> RecvHolderMessage(int sock) {
  std::vector<char> buf(sizeof(Header) + kHolderMaxKey + kHolderMaxData + 1);
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return absl::UnavailableError(fmt::format("FUSE holder socket: {}", strerror(errno)));
  if (n == 0) return absl::UnavailableError("FUSE holder socket closed");
  HolderMessage out;
  // Own every fd that arrived before judging the packet, so none leaks.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (!out.fd.valid()) {
        out.fd.Reset(fd);
      } else {
        UniqueFd extra(fd);
      }
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || static_cast<size_t>(n) < sizeof(Header)) {
    return absl::DataLossError(fmt::format("malformed FUSE holder packet ({} bytes)", n));
  }
  Header h;
  std::memcpy(&h, buf.data(), sizeof(h));
  if (h.magic != kMagic || h.key_len > kHolderMaxKey || h.data_len > kHolderMaxData ||
      sizeof(Header) + h.key_len + h.data_len != static_cast<size_t>(n)) {
    return absl::DataLossError(fmt::format("malformed FUSE holder packet ({} bytes)", n));
  }
  out.op = static_cast<HolderOp>(h.op);
  out.key.assign(buf.data() + sizeof(Header), h.key_len);
  out.data.assign(buf.data() + sizeof(Header) + h.key_len, h.data_len);
  return out;
}

}  // namespace lazypull::mount
