// systemd's readiness protocol (sd_notify(3)) without libsystemd: when the daemon runs as a
// `Type=notify` service, systemd passes the path of a datagram socket in $NOTIFY_SOCKET and
// waits for "READY=1" before starting the units ordered after it (containerd). Outside systemd
// the variable is unset and every call is a no-op.
#ifndef LAZYPULL_SERVER_SD_NOTIFY_H_
#define LAZYPULL_SERVER_SD_NOTIFY_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace lazypull {

// Sends `state` (newline-separated KEY=VALUE assignments, e.g. "READY=1\nSTATUS=serving") to
// the socket named by `notify_socket` (an absolute path, or "@name" for the abstract
// namespace). "" → OK without sending. Errors (bad path, send failure) name the socket.
absl::Status SdNotify(std::string_view notify_socket, std::string_view state);

// SdNotify with $NOTIFY_SOCKET.
absl::Status SdNotifyFromEnv(std::string_view state);

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_SD_NOTIFY_H_
