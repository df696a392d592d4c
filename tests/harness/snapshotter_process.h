// SnapshotterProcess: the real lazypull-snapshotter binary (<build>/bin) run by a test on its own
// root and unix socket. Stopped by PID when the object dies.
#ifndef LAZYPULL_TESTS_HARNESS_SNAPSHOTTER_PROCESS_H_
#define LAZYPULL_TESTS_HARNESS_SNAPSHOTTER_PROCESS_H_

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {

struct SnapshotterOptions {
  // TOML written to <work_dir>/config.toml and passed as --config; empty = no --config flag
  // (the daemon's embedded defaults).
  std::string config_toml;
  std::string log_level = "debug";
  // --metrics-address: "" (the default here) turns the Prometheus endpoint off, so tests
  // running in parallel do not compete for the daemon's default port 127.0.0.1:9102.
  std::string metrics_address;
  // Extra command-line arguments, appended after the standard ones.
  std::vector<std::string> extra_args;
  // Environment entries added to the daemon's (e.g. test hooks).
  std::map<std::string, std::string> env;
  // How long Start/Restart wait for the socket to accept connections.
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(30);
  // Binary to run; empty = $LAZYPULL_SNAPSHOTTER_BIN if set (e.g. bench's lazypull-refproxy, to
  // check a test against containerd's overlayfs behind the same proxy), else
  // BinaryDir() + "/bin/lazypull-snapshotter".
  std::string binary;
};

class SnapshotterProcess {
 public:
  // Starts the daemon with --root <work_dir>/root --address <work_dir>/lazypull.sock
  // (--config/--log-level per `options`), logging to <work_dir>/snapshotter.log, and waits until
  // the socket accepts connections. On failure (exit, timeout) the error carries the daemon's
  // log. `work_dir` must exist and outlive the object; its path must be short enough for a unix
  // socket (TempDir paths are).
  static absl::StatusOr<std::unique_ptr<SnapshotterProcess>> Start(const std::string& work_dir,
                                                                   SnapshotterOptions options = {});

  // Same, with an explicit root and socket path (e.g. to point a second instance at the root of
  // a first one). The log still goes to <work_dir>/snapshotter.log.
  static absl::StatusOr<std::unique_ptr<SnapshotterProcess>> StartWith(
      const std::string& work_dir, const std::string& root, const std::string& socket,
      SnapshotterOptions options = {});

  // Stops the daemon (SIGKILL after the grace period) if still running.
  ~SnapshotterProcess();
  SnapshotterProcess(const SnapshotterProcess&) = delete;
  SnapshotterProcess& operator=(const SnapshotterProcess&) = delete;

  const std::string& root() const { return root_; }
  const std::string& socket() const { return socket_; }
  // "unix://<socket>", for gRPC channels.
  std::string grpc_target() const { return "unix://" + socket_; }
  pid_t pid() const { return process_.pid(); }
  bool running() { return process_.running(); }

  // SIGTERM and wait up to `grace` for a clean exit. Returns OK only if the daemon exited with
  // status 0 in time; a non-zero exit or a needed SIGKILL is an error carrying the log tail.
  // Idempotent (OK when not running).
  absl::Status Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // SIGKILL and reap, as a crash would. The socket file may be left behind.
  void Kill();
  // Sends `sig` without waiting.
  void Signal(int sig) { process_.Signal(sig); }
  // Waits up to `timeout` for the daemon to exit on its own; returns the waitpid status.
  absl::StatusOr<int> WaitForExit(std::chrono::milliseconds timeout) {
    return process_.Wait(timeout);
  }
  // Stop() (if running) then start again with the same root, socket and options; waits for the
  // socket. Returns the Stop error, if any, only after a successful restart is impossible.
  absl::Status Restart();
  // Graceful upgrade as a Kubernetes DaemonSet with maxSurge (or an operator) does it: starts a
  // successor with the same root, socket and options plus --takeover (`binary`, if not empty,
  // replaces the executable: a different build), waits until it logs that it waits for the
  // root lock, SIGTERMs the running daemon, waits for its clean exit and for the successor to
  // serve. This object then controls the successor. Errors carry the log tail.
  absl::Status Upgrade(const std::string& binary = "");
  // Graceful upgrade as systemd's `systemctl reload` does it: SIGHUP, after which the daemon
  // starts the binary at its own path with --takeover and stops once that one waits for the
  // root lock. Waits for the old daemon's clean exit and for the successor to serve; this
  // object then controls the successor (this process is its subreaper meanwhile).
  absl::Status UpgradeBySighup();

  std::string ReadLog() const { return process_.ReadLog(); }
  // The options the next Restart uses (e.g. to set or clear a test hook's env).
  SnapshotterOptions& options() { return options_; }
  const std::string& log_path() const { return process_.log_path(); }

 private:
  SnapshotterProcess() = default;
  absl::Status Launch();
  // Waits until the log, from byte `from` on, has a "lazypull-snapshotter serving" line of the
  // current process.
  absl::Status WaitServing(size_t from, std::chrono::steady_clock::time_point deadline);
  size_t LogSize() const;
  std::string LogFrom(size_t offset) const;

  std::string work_dir_, root_, socket_;
  SnapshotterOptions options_;
  Subprocess process_;
};

// The digests ("sha256:...") of the layers listed under "layers" in a daemon's status.json at
// `status_path`, i.e. mounted lazily now; empty if the file is missing or not JSON. A digest
// anywhere else in the file (e.g. under "unavailable") does not count.
std::set<std::string> LazyLayerDigests(const std::string& status_path);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_SNAPSHOTTER_PROCESS_H_
