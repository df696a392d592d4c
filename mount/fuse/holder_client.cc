#include "mount/fuse/holder_client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "fmt/format.h"

namespace lazypull::mount {

absl::StatusOr<std::unique_ptr<FuseHolderClient>> FuseHolderClient::Connect(
    const std::string& socket) {
  std::unique_ptr<FuseHolderClient> c(new FuseHolderClient(socket));
  std::lock_guard<std::mutex> lock(c->mu_);
  if (absl::Status s = c->ConnectLocked(); !s.ok()) return s;
  return c;
}

absl::Status FuseHolderClient::ConnectLocked() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(fmt::format("FUSE holder socket path too long: {}", socket_));
  }
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::InternalError(fmt::format("socket: {}", strerror(errno)));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        fmt::format("no FUSE holder at {}: {}", socket_, strerror(errno)));
  }
  sock_ = std::move(fd);
  return absl::OkStatus();
}

absl::StatusOr<HolderMessage> FuseHolderClient::CallLocked(const HolderMessage& request) {
  absl::Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!sock_.valid()) {
      if (last = ConnectLocked(); !last.ok()) return last;
    }
    if (last = SendHolderMessage(sock_.get(), request); last.ok()) {
      absl::StatusOr<HolderMessage> answer = RecvHolderMessage(sock_.get());
      if (answer.ok()) {
        if (answer->op == HolderOp::kError) {
          return absl::InternalError(fmt::format("FUSE holder: {}", answer->data));
        }
        return answer;
      }
      last = answer.status();
    }
    sock_.Reset();
  }
  return last;
}

absl::Status FuseHolderClient::Put(const std::string& key, int fd, std::string_view init_request) {
  HolderMessage m;
  m.op = HolderOp::kPut;
  m.key = key;
  m.data = std::string(init_request);
  m.fd.Reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!m.fd.valid()) return absl::InternalError(fmt::format("dup: {}", strerror(errno)));
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<HolderMessage> answer = CallLocked(m);
  return answer.status();
}

absl::StatusOr<HeldConnection> FuseHolderClient::Get(const std::string& key) {
  HolderMessage m;
  m.op = HolderOp::kGet;
  m.key = key;
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<HolderMessage> answer = CallLocked(m);
  if (!answer.ok()) return answer.status();
  if (answer->op == HolderOp::kNotFound) {
    return absl::NotFoundError(fmt::format("the FUSE holder has no connection for {}", key));
  }
  if (answer->op != HolderOp::kOk || !answer->fd.valid()) {
    return absl::DataLossError(fmt::format("FUSE holder answered Get({}) without an fd", key));
  }
  return HeldConnection{std::move(answer->fd), std::move(answer->data)};
}

absl::Status FuseHolderClient::Forget(const std::string& key) {
  HolderMessage m;
  m.op = HolderOp::kForget;
  m.key = key;
  std::lock_guard<std::mutex> lock(mu_);
  return CallLocked(m).status();
}

absl::StatusOr<std::vector<std::string>> FuseHolderClient::List() {
  HolderMessage m;
  m.op = HolderOp::kList;
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<HolderMessage> answer = CallLocked(m);
  std::vector<std::string> keys;
  while (answer.ok() && answer->op == HolderOp::kEntry) {
    keys.push_back(std::move(answer->key));
    answer = RecvHolderMessage(sock_.get());
  }
  if (!answer.ok()) {
    sock_.Reset();
    return answer.status();
  }
  if (answer->op != HolderOp::kEnd) return absl::DataLossError("FUSE holder: bad List answer");
  return keys;
}

}  // namespace lazypull::mount
