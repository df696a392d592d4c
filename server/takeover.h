// Graceful upgrade by takeover (issue 20): the successor daemon starts while the daemon it
// replaces still serves, so the time a new process needs to exec, load its libraries and read
// its configuration is spent before any reader waits.
//
//   successor (--takeover)                       running daemon
//   exec, config, warm root files                serves
//   root lock held: "waiting ..." (+ ready fd)   SIGTERM (from the successor's launcher: systemd
//   polls the root lock every 2 ms                 reload, Kubernetes deleting the old pod)
//                                                stops gRPC, hands every FUSE mount to the
//                                                holder (stop reading, finish in-flight), exits
//   lock taken: opens metadata, adopts mounts
//
// The root lock decides who serves: the successor opens metadata and touches mounts only once
// it holds the lock, which the kernel releases only when the previous process is gone, so
// nothing it committed is lost and no fd is ever served by both.
//
// SpawnSuccessor is the launcher systemd uses (`systemctl reload` sends SIGHUP): the running
// daemon starts the binary now at its own path with --takeover, waits until that process waits
// for the lock (so a successor that cannot start leaves the running daemon serving), then
// stops as on SIGTERM.
#ifndef LAZYPULL_SERVER_TAKEOVER_H_
#define LAZYPULL_SERVER_TAKEOVER_H_

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/root_lock.h"

namespace lazypull {

// Takes the root lock of `root`. When another process holds it: logs that it waits, asks the
// kernel to read the files a start reads (metadata, kept index bytes) into the page cache,
// writes one byte to `ready_fd` (if >= 0; closed in every case), then tries again every 2 ms
// until it gets the lock. `stop_signals` must be blocked in the calling thread; one of them
// arriving ends the wait with Cancelled (the signal is consumed). Other lock errors as
// RootLock::Acquire.
absl::StatusOr<RootLock> AcquireRootLockForTakeover(const std::string& root, int ready_fd,
                                                    const sigset_t& stop_signals);

// Starts `exe` with `args` (argv[1..] of the running daemon, from which any --takeover and
// --takeover-ready-fd are dropped) plus `--takeover --takeover-ready-fd 3`, with every signal
// unblocked, and waits up to `ready_timeout` until it reports that it waits for the root lock.
// Returns its pid. Errors: the spawn failed, or the successor exited or did not report in time
// (then it is killed and reaped) — the caller keeps serving.
absl::StatusOr<pid_t> SpawnSuccessor(const std::string& exe, const std::vector<std::string>& args,
                                     absl::Duration ready_timeout);

// The path of the running executable as the file system names it now: /proc/self/exe without
// the " (deleted)" the kernel appends once a package upgrade replaced the file (then the path
// names the new binary).
absl::StatusOr<std::string> SelfExecutablePath();

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_TAKEOVER_H_
