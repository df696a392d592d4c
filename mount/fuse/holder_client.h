// FuseHolderClient: the daemon's connection to its FUSE holder (tools/fuse_holder/), the small
// process that keeps every lazypull FUSE connection (its /dev/fuse fd and the kernel's
// original INIT request) alive across a crash or upgrade of the daemon, so a successor can
// adopt the mounts instead of remounting them (see fuse_channel.h).
//
// Thread-safe: one connection, one request at a time. A broken connection (the holder was
// restarted) is re-established once per call.
#ifndef LAZYPULL_MOUNT_FUSE_HOLDER_CLIENT_H_
#define LAZYPULL_MOUNT_FUSE_HOLDER_CLIENT_H_

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "mount/fuse/holder_protocol.h"

namespace lazypull::mount {

// A connection kept by the holder: a dup of its /dev/fuse fd and the INIT request the kernel
// sent when it was mounted.
struct HeldConnection {
  UniqueFd fd;
  std::string init_request;
};

class FuseHolderClient {
 public:
  // Connects to the holder's socket. Unavailable when no holder listens there.
  static absl::StatusOr<std::unique_ptr<FuseHolderClient>> Connect(const std::string& socket);

  const std::string& socket() const { return socket_; }

  // Hands `fd` (duplicated) and `init_request` to the holder under `key` (a mount target).
  absl::Status Put(const std::string& key, int fd, std::string_view init_request);
  // The connection held under `key`; NotFound when the holder has none.
  absl::StatusOr<HeldConnection> Get(const std::string& key);
  // Makes the holder close its fd of `key` (after the daemon unmounted it). OK when unknown.
  absl::Status Forget(const std::string& key);
  // Every key held.
  absl::StatusOr<std::vector<std::string>> List();

 private:
  explicit FuseHolderClient(std::string socket) : socket_(std::move(socket)) {}
  absl::Status ConnectLocked();
  // Sends `request` and receives the first answer, reconnecting once if the link broke.
  absl::StatusOr<HolderMessage> CallLocked(const HolderMessage& request);

  const std::string socket_;
  std::mutex mu_;
  UniqueFd sock_;  // guarded by mu_
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_HOLDER_CLIENT_H_
