// FuseHolder: the process that keeps lazypull's FUSE connections alive while the daemon is
// down (crash, kill, upgrade). It owns one fd of every mount's /dev/fuse file and the INIT
// request the kernel sent at mount (the daemon hands both over, mount/fuse/holder_client.h),
// never reads from them, and gives a dup of each back to the daemon that asks. A connection
// the kernel ended (the mount went away) is dropped by itself; one the daemon unmounted is
// dropped when the daemon says so.
//
// Deliberately small (no registry, gRPC or FUSE library code) so it rarely needs upgrading:
// while it runs, restarting it loses nothing only if the daemon is up (the daemon's own fds
// keep the mounts alive; the daemon re-registers nothing, so a holder restarted under a
// running daemon holds nothing until the daemon next mounts).
//
// Single-threaded: Run() serves the socket and watches the held fds with poll(2).
#ifndef LAZYPULL_TOOLS_FUSE_HOLDER_FUSE_HOLDER_H_
#define LAZYPULL_TOOLS_FUSE_HOLDER_FUSE_HOLDER_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull::fuse_holder {

class FuseHolder {
 public:
  // Listens on `socket` (a unix SOCK_SEQPACKET socket, mode 0600; a leftover socket file is
  // replaced). A second holder on the same path fails (FailedPrecondition) thanks to the
  // flock on `<socket>.lock`.
  static absl::StatusOr<std::unique_ptr<FuseHolder>> Listen(const std::string& socket);
  ~FuseHolder();

  // Serves until `stop_fd` (e.g. a signalfd) becomes readable. Errors only for a broken
  // listening socket.
  absl::Status Run(int stop_fd);

 private:
  struct Held {
    UniqueFd fd;
    std::string init_request;
  };
  explicit FuseHolder(std::string socket) : socket_(std::move(socket)) {}
  // Answers one request of `client`; false when the client is gone or misbehaved.
  bool Serve(int client);

  const std::string socket_;
  UniqueFd lock_;
  UniqueFd listen_;
  std::map<int, UniqueFd> clients_;   // by fd
  std::map<std::string, Held> held_;  // by key (mount target)
};

}  // namespace lazypull::fuse_holder

#endif  // LAZYPULL_TOOLS_FUSE_HOLDER_FUSE_HOLDER_H_
