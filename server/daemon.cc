#include "server/daemon.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "server/rpc_metrics.h"
#include "server/takeover.h"

namespace lazypull {
namespace {

absl::Status MakeDirs(const std::string& path, std::filesystem::perms perms) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) return absl::OkStatus();
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", path, ": ", ec.message()));
  std::filesystem::permissions(path, perms, ec);
  return absl::OkStatus();
}

// True when something accepts connections on the unix socket `path`.
bool SocketIsLive(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config,
                                                      RemoteLayerHandler* remote) {
  return Start(config, RemoteLayerFactoryWithMetrics(), remote, nullptr, {});
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config,
                                                      const RemoteLayerFactory& factory,
                                                      grpc::CallbackGenericService* extra_service) {
  RemoteLayerFactoryWithMetrics with_metrics;
  if (factory) {
    with_metrics = [&factory](const DaemonConfig& c, const std::shared_ptr<metrics::Metrics>&) {
      return factory(c);
    };
  }
  return Start(config, with_metrics, nullptr, extra_service, {});
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config,
                                                      const RemoteLayerFactoryWithMetrics& factory,
                                                      grpc::CallbackGenericService* extra_service,
                                                      TakeoverOptions takeover) {
  return Start(config, factory, nullptr, extra_service, takeover);
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config,
                                                      const RemoteLayerFactoryWithMetrics& factory,
                                                      RemoteLayerHandler* remote,
                                                      grpc::CallbackGenericService* extra_service,
                                                      TakeoverOptions takeover) {
  using std::filesystem::perms;
  // Before anything is created under it (the remote-layer handler mounts there).
  if (absl::Status s = MakePrivateRoot(config.root); !s.ok()) return s;
  absl::StatusOr<RootLock> lock = absl::UnknownError("unset");
  if (takeover.enabled) {
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    lock = AcquireRootLockForTakeover(config.root, takeover.ready_fd, stop_signals);
  } else {
    lock = RootLock::Acquire(config.root);
  }
  if (!lock.ok()) return lock.status();
  std::unique_ptr<Daemon> d(new Daemon(config, std::move(*lock)));
  // Metrics first: a port in use fails the start before layers are re-mounted.
  if (!config.metrics_address.empty()) {
    absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> server =
        metrics::MetricsServer::Start(config.metrics_address, *d->metrics_);
    if (!server.ok()) return server.status();
    d->metrics_server_ = std::move(*server);
  }
  if (remote == nullptr && factory) {
    absl::StatusOr<std::unique_ptr<RemoteLayerHandler>> owned = factory(config, d->metrics_);
    if (!owned.ok()) return owned.status();
    d->owned_remote_ = std::move(*owned);
    remote = d->owned_remote_.get();
  }

  absl::StatusOr<std::unique_ptr<Snapshotter>> snapshotter =
      Snapshotter::Open({.root = config.root, .remote = remote});
  if (!snapshotter.ok()) return snapshotter.status();
  d->snapshotter_ = std::move(*snapshotter);
  if (remote != nullptr) {
    if (absl::Status s = remote->FinishRestore(); !s.ok()) return s;
  }
  d->service_ = std::make_unique<SnapshotsService>(d->snapshotter_.get());

  const std::string& address = config.address;
  if (address.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path too long (max ", sizeof(sockaddr_un{}.sun_path) - 1, " bytes): ", address));
  }
  std::string socket_dir = std::filesystem::path(address).parent_path().string();
  if (!socket_dir.empty()) {
    if (absl::Status s =
            MakeDirs(socket_dir, perms::owner_all | perms::group_exec | perms::others_exec);
        !s.ok()) {
      return s;
    }
  }
  if (SocketIsLive(address)) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket ", address, " is in use by another process"));
  }
  ::unlink(address.c_str());  // stale socket from a crashed instance

  // gRPC creates the socket with the process umask; bind it under a private name, set its mode,
  // then rename it into place, so no client can ever connect through wider permissions (and
  // whoever sees `address` sees its final mode). A path too long for that falls back to
  // binding `address` itself.
  std::string bind_path = (socket_dir.empty() ? std::string(".") : socket_dir) + "/.lazypull-" +
                          std::to_string(::getpid()) + ".sock";
  if (bind_path.size() >= sizeof(sockaddr_un{}.sun_path)) bind_path = address;
  if (bind_path != address) ::unlink(bind_path.c_str());

  grpc::ServerBuilder builder;
  int selected_port = -1;
  builder.AddListeningPort("unix:" + bind_path, grpc::InsecureServerCredentials(), &selected_port);
  builder.RegisterService(d->service_.get());
  if (extra_service != nullptr) builder.RegisterCallbackGenericService(extra_service);
  builder.SetMaxReceiveMessageSize(16 << 20);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewRpcMetricsInterceptor(d->metrics_));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  d->server_ = builder.BuildAndStart();
  if (d->server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on unix socket ", address));
  }
  if (::chmod(bind_path.c_str(), config.socket_mode) != 0) {
    absl::Status s = absl::ErrnoToStatus(errno, absl::StrCat("chmod ", bind_path));
    ::unlink(bind_path.c_str());
    d->Shutdown(absl::ZeroDuration());
    return s;
  }
  if (bind_path != address && ::rename(bind_path.c_str(), address.c_str()) != 0) {
    absl::Status s =
        absl::ErrnoToStatus(errno, absl::StrCat("rename ", bind_path, " to ", address));
    ::unlink(bind_path.c_str());
    d->Shutdown(absl::ZeroDuration());
    return s;
  }
  LogInfo("lazypull-snapshotter serving",
          {{"address", address},
           {"root", config.root},
           {"mount_backend", MountBackendName(config.mount_backend)},
           {"pid", ::getpid()}});
  return d;
}

void Daemon::Shutdown(absl::Duration grace) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  metrics_server_.reset();  // no scrape may reach the remote-layer handler while it goes away
  if (server_ != nullptr) {
    // Stops accepting; in-flight RPCs may finish until the deadline, then are cancelled.
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
    server_->Wait();
    ::unlink(config_.address.c_str());
  }
  LogInfo("lazypull-snapshotter stopped", {{"address", config_.address}});
}

Daemon::~Daemon() { Shutdown(); }

}  // namespace lazypull
