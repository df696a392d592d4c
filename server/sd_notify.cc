#include "server/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/unique_fd.h"

namespace lazypull {

absl::Status SdNotify(std::string_view notify_socket, std::string_view state) {
  if (notify_socket.empty()) return absl::OkStatus();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if ((notify_socket[0] != '/' && notify_socket[0] != '@') || notify_socket.size() < 2 ||
      notify_socket.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("NOTIFY_SOCKET '", std::string(notify_socket),
                     "' is not an absolute socket path or @abstract name"));
  }
  std::memcpy(addr.sun_path, notify_socket.data(), notify_socket.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + notify_socket.size());
  if (addr.sun_path[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: no terminating NUL counted
  } else {
    len += 1;
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "sd_notify: socket");
  ssize_t n = ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                       reinterpret_cast<const sockaddr*>(&addr), len);
  if (n < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("sd_notify to ", std::string(notify_socket)));
  }
  return absl::OkStatus();
}

absl::Status SdNotifyFromEnv(std::string_view state) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return SdNotify(socket == nullptr ? "" : socket, state);
}

}  // namespace lazypull
