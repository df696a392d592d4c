// Daemon: the running snapshotter — root lock, Snapshotter, gRPC server on a unix socket.
//
// Start order: create root (mode 0700 enforced at every start, see MakePrivateRoot), take
// <root>/lazypull.lock (a second instance on the same root fails here; with config.takeover it
// waits until the running one hands over and exits, TakeoverOptions), open metadata, bind
// the socket (a stale socket file is replaced; a live one is refused), chmod it to
// config.socket_mode. Shutdown: stop accepting, let in-flight RPCs
// finish (up to a grace period, then cancel them), remove the socket, release the lock.
#ifndef LAZYPULL_SERVER_DAEMON_H_
#define LAZYPULL_SERVER_DAEMON_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "metrics/metrics.h"
#include "metrics/metrics_server.h"
#include "server/config.h"
#include "server/remote_layer_handler.h"
#include "server/root_lock.h"
#include "server/service.h"
#include "server/snapshotter.h"

namespace lazypull {

// Graceful upgrade (issue 20; command line --takeover, server/takeover.h): when another daemon
// holds the root lock, wait until it hands over and exits instead of failing. SIGTERM and
// SIGINT must then be blocked in the thread calling Start; either one ends the wait (Start
// fails with Cancelled, having touched nothing).
struct TakeoverOptions {
  bool enabled = false;
  int ready_fd = -1;  // gets one byte (and is closed) once the wait began; -1 = none
};

class Daemon {
 public:
  // `remote` may be null (no remote snapshots); not owned, must outlive the Daemon.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonConfig& config,
                                                       RemoteLayerHandler* remote = nullptr);

  // Builds the daemon's own remote-layer handler once the root lock is held (so a second
  // instance on the same root fails on the lock before touching anything). Null result: none.
  using RemoteLayerFactory =
      std::function<absl::StatusOr<std::unique_ptr<RemoteLayerHandler>>(const DaemonConfig&)>;
  //
  // `extra_service`, when given, is served on the same socket for every method the Snapshots
  // service does not implement (the CRI ImageService proxy, server/cri). Not owned; must outlive
  // the Daemon.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      const DaemonConfig& config, const RemoteLayerFactory& factory,
      grpc::CallbackGenericService* extra_service = nullptr);

  // --- metrics (issue 11) ---
  // The same, with a factory that records into the daemon's metrics. The daemon owns one
  // metrics::Metrics (snapshot RPCs are recorded by a gRPC interceptor) and, unless
  // config.metrics_address is empty, serves it at http://<metrics_address>/metrics; an
  // address that cannot be listened on fails the start (FailedPrecondition naming it).
  using RemoteLayerFactoryWithMetrics =
      std::function<absl::StatusOr<std::unique_ptr<RemoteLayerHandler>>(
          const DaemonConfig&, const std::shared_ptr<metrics::Metrics>&)>;
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      const DaemonConfig& config, const RemoteLayerFactoryWithMetrics& factory,
      grpc::CallbackGenericService* extra_service = nullptr, TakeoverOptions takeover = {});
  metrics::Metrics& metrics() { return *metrics_; }
  // --- end metrics ---
  // Shuts down (see Shutdown) if still running.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Idempotent; thread-safe. In-flight RPCs get `grace` to finish.
  void Shutdown(absl::Duration grace = absl::Seconds(10));

  Snapshotter& snapshotter() { return *snapshotter_; }
  const DaemonConfig& config() const { return config_; }

 private:
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonConfig& config,
                                                       const RemoteLayerFactoryWithMetrics& factory,
                                                       RemoteLayerHandler* remote,
                                                       grpc::CallbackGenericService* extra_service,
                                                       TakeoverOptions takeover);
  Daemon(DaemonConfig config, RootLock lock) : config_(std::move(config)), lock_(std::move(lock)) {}

  DaemonConfig config_;
  RootLock lock_;
  std::shared_ptr<metrics::Metrics> metrics_ = std::make_shared<metrics::Metrics>();
  std::unique_ptr<metrics::MetricsServer> metrics_server_;  // stopped first by Shutdown
  std::unique_ptr<RemoteLayerHandler> owned_remote_;        // outlives the snapshotter and server
  std::unique_ptr<Snapshotter> snapshotter_;
  std::unique_ptr<SnapshotsService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::mutex shutdown_mu_;
  bool shut_down_ = false;
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_DAEMON_H_
