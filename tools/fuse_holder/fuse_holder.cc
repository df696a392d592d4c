#include "tools/fuse_holder/fuse_holder.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "base/logging.h"
#include "fmt/format.h"
#include "mount/fuse/holder_protocol.h"

namespace lazypull::fuse_holder {

using mount::HolderMessage;
using mount::HolderOp;

absl::StatusOr<std::unique_ptr<FuseHolder>> FuseHolder::Listen(const std::string& socket) {
  std::unique_ptr<FuseHolder> h(new FuseHolder(socket));
  const std::string lock_path = socket + ".lock";
  h->lock_.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!h->lock_.valid()) {
    return absl::FailedPreconditionError(fmt::format("open {}: {}", lock_path, strerror(errno)));
  }
  if (::flock(h->lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("another FUSE holder owns {} ({})", socket, strerror(errno)));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(fmt::format("socket path too long: {}", socket));
  }
  std::memcpy(addr.sun_path, socket.data(), socket.size());
  ::unlink(socket.c_str());  // ours: we hold the lock
  h->listen_.Reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!h->listen_.valid()) return absl::InternalError(fmt::format("socket: {}", strerror(errno)));
  const mode_t old = ::umask(077);
  const int rc = ::bind(h->listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old);
  if (rc != 0 || ::listen(h->listen_.get(), 16) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("listening on {}: {}", socket, strerror(errno)));
  }
  LogInfo("FUSE holder listening", {{"socket", socket}});
  return h;
}

FuseHolder::~FuseHolder() {
  if (listen_.valid()) ::unlink(socket_.c_str());
}

absl::Status FuseHolder::Run(int stop_fd) {
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({stop_fd, POLLIN, 0});
    fds.push_back({listen_.get(), POLLIN, 0});
    for (const auto& [fd, owned] : clients_) fds.push_back({fd, POLLIN, 0});
    const size_t first_held = fds.size();
    std::vector<std::string> keys;
    // events = 0: only POLLERR (the connection ended) matters; POLLIN (requests queued while
    // no daemon serves) is none of the holder's business.
    for (const auto& [key, held] : held_) {
      fds.push_back({held.fd.get(), 0, 0});
      keys.push_back(key);
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(fmt::format("poll: {}", strerror(errno)));
    }
    if (fds[0].revents != 0) return absl::OkStatus();
    if (fds[1].revents & POLLIN) {
      int c = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) clients_.emplace(c, UniqueFd(c));
    }
    for (size_t i = 2; i < first_held; ++i) {
      if (fds[i].revents != 0 && !Serve(fds[i].fd)) clients_.erase(fds[i].fd);
    }
    for (size_t i = first_held; i < fds.size(); ++i) {
      if ((fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) == 0) continue;
      auto it = held_.find(keys[i - first_held]);
      if (it != held_.end() && it->second.fd.get() == fds[i].fd) {
        LogInfo("FUSE connection ended; released", {{"key", it->first}});
        held_.erase(it);
      }
    }
  }
}

bool FuseHolder::Serve(int client) {
  absl::StatusOr<HolderMessage> request = mount::RecvHolderMessage(client);
  if (!request.ok()) {
    if (request.status().code() != absl::StatusCode::kUnavailable) {
      LogWarn("bad FUSE holder request", {{"error", request.status().ToString()}});
    }
    return false;
  }
  HolderMessage answer;
  switch (request->op) {
    case HolderOp::kPut:
      if (!request->fd.valid() || request->key.empty()) {
        answer.op = HolderOp::kError;
        answer.data = "put without an fd or key";
        break;
      }
      held_[request->key] = Held{std::move(request->fd), std::move(request->data)};
      LogInfo("FUSE connection held", {{"key", request->key}, {"held", held_.size()}});
      break;
    case HolderOp::kGet: {
      auto it = held_.find(request->key);
      if (it == held_.end()) {
        answer.op = HolderOp::kNotFound;
        break;
      }
      answer.fd.Reset(::fcntl(it->second.fd.get(), F_DUPFD_CLOEXEC, 0));
      answer.data = it->second.init_request;
      LogInfo("FUSE connection handed over", {{"key", request->key}});
      break;
    }
    case HolderOp::kForget:
      if (held_.erase(request->key) > 0) {
        LogInfo("FUSE connection released", {{"key", request->key}, {"held", held_.size()}});
      }
      break;
    case HolderOp::kList:
      for (const auto& [key, held] : held_) {
        HolderMessage entry;
        entry.op = HolderOp::kEntry;
        entry.key = key;
        if (!mount::SendHolderMessage(client, entry).ok()) return false;
      }
      answer.op = HolderOp::kEnd;
      break;
    default:
      answer.op = HolderOp::kError;
      answer.data = fmt::format("unknown op {}", static_cast<uint32_t>(request->op));
  }
  return mount::SendHolderMessage(client, answer).ok();
}

}  // namespace lazypull::fuse_holder
