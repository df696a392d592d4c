// lazypull-snapshotter: containerd remote snapshotter daemon.
//
//   lazypull-snapshotter [--config FILE] [--address SOCK] [--root DIR] [--log-level LEVEL]
//                        [--takeover]
//
// Flags override the TOML config file, which overrides the built-in defaults. Runs in the
// foreground; SIGTERM/SIGINT shut it down cleanly. SIGHUP upgrades in place: the binary now at
// this executable's path is started with --takeover and, once it waits for the root lock, this
// daemon stops as on SIGTERM (server/takeover.h; systemd's ExecReload). Exit code 1 on startup
// errors; 0 when a --takeover start is stopped before it took over.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "base/logging.h"
#include "metrics/metrics_server.h"
#include "server/config.h"
#include "server/cri/cri_keychain_service.h"
#include "server/daemon.h"
#include "server/daemon_help.h"
#include "server/remote/remote_layer_manager.h"
#include "server/sd_notify.h"
#include "server/takeover.h"

int main(int argc, char** argv) {
  CLI::App app{"lazypull-snapshotter: containerd remote snapshotter (lazy image pulling)"};
  app.formatter(std::make_shared<lazypull::ManPageFormatter>());
  app.option_defaults()->group("OPTIONS");
  app.set_help_flag("-h,--help", "print this help and exit");
  std::string config_path, address, root, log_level;
  app.add_option("--config", config_path, "TOML config file (default: none, built-in defaults)")
      ->type_name("FILE");
  app.add_option("--address", address, "gRPC unix socket (default /run/lazypull/lazypull.sock)")
      ->type_name("SOCKET");
  app.add_option("--root", root, "state directory (default /var/lib/lazypull)")->type_name("DIR");
  app.add_option("--log-level", log_level, "debug|info|warn|error (default info)")
      ->type_name("LEVEL");
  std::optional<std::string> metrics_address;
  app.add_option("--metrics-address", metrics_address,
                 "Prometheus /metrics address (default 127.0.0.1:9102; \"\" = off)")
      ->type_name("ADDRESS");
  std::optional<std::string> metrics_host;
  app.add_option("--metrics-host", metrics_host,
                 "replaces the host of the metrics address, keeping its port (e.g. the node's IP "
                 "from Kubernetes' downward API)")
      ->type_name("IP");
  bool takeover = false;
  app.add_flag("--takeover", takeover,
               "graceful upgrade: if another daemon serves this root, load what can be loaded, "
               "wait until it hands over (send it SIGTERM) and take over its FUSE mounts");
  int takeover_ready_fd = -1;
  app.add_option("--takeover-ready-fd", takeover_ready_fd,
                 "with --takeover: write one byte to this fd once waiting (used by SIGHUP)")
      ->type_name("FD");
  CLI11_PARSE(app, argc, argv);
  const std::vector<std::string> args(argv + 1, argv + argc);

  absl::StatusOr<lazypull::DaemonConfig> config = lazypull::LoadDaemonConfig(config_path);
  if (!config.ok()) {
    lazypull::LogError("invalid configuration", {{"error", config.status().ToString()}});
    return 1;
  }
  if (!address.empty()) config->address = address;
  if (!root.empty()) config->root = root;
  if (!log_level.empty()) config->log_level = log_level;
  if (metrics_address.has_value()) config->metrics_address = *metrics_address;
  if (metrics_host.has_value() && !config->metrics_address.empty()) {
    absl::StatusOr<std::string> replaced =
        lazypull::metrics::ReplaceListenHost(config->metrics_address, *metrics_host);
    if (!replaced.ok()) {
      lazypull::LogError("invalid --metrics-host", {{"error", replaced.status().ToString()}});
      std::fprintf(stderr, "lazypull-snapshotter: %s\n", replaced.status().ToString().c_str());
      return 1;
    }
    config->metrics_address = *replaced;
  }
  absl::StatusOr<lazypull::LogLevel> level = lazypull::ParseLogLevel(config->log_level);
  if (!level.ok()) {
    lazypull::LogError("invalid log level", {{"error", level.status().ToString()}});
    return 1;
  }
  lazypull::SetLogLevel(*level);
  // With "lazypull-snapshotter serving" and "exited", times a restart (bench/handover).
  lazypull::LogInfo("lazypull-snapshotter starting", {{"pid", ::getpid()}});

  // Block the shutdown signals in every thread (gRPC's included) and take them synchronously.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // [cri_keychain]: CRI ImageService proxy on the same socket; its credentials reach the
  // remote-layer path. Declared before the daemon so it outlives the gRPC server.
  absl::StatusOr<std::unique_ptr<lazypull::cri::CriKeychainService>> cri =
      lazypull::cri::CriKeychainService::FromToml(*config->table);
  if (!cri.ok()) {
    lazypull::LogError("invalid configuration", {{"error", cri.status().ToString()}});
    std::fprintf(stderr, "lazypull-snapshotter: %s\n", cri.status().ToString().c_str());
    return 1;
  }
  std::shared_ptr<const lazypull::registry::CredentialProvider> cri_credentials =
      *cri ? (*cri)->credentials() : nullptr;
  absl::StatusOr<std::unique_ptr<lazypull::Daemon>> daemon = lazypull::Daemon::Start(
      *config,
      [&](const lazypull::DaemonConfig& c,
          const std::shared_ptr<lazypull::metrics::Metrics>& metrics) {
        return lazypull::remote::NewRemoteLayerHandlerWithCredentials(c, cri_credentials, metrics);
      },
      *cri ? (*cri)->grpc_service() : nullptr,
      lazypull::TakeoverOptions{.enabled = takeover, .ready_fd = takeover_ready_fd});
  if (!daemon.ok() && daemon.status().code() == absl::StatusCode::kCancelled) {
    lazypull::LogInfo("lazypull-snapshotter exited before taking over",
                      {{"pid", ::getpid()}, {"reason", daemon.status().ToString()}});
    return 0;
  }
  if (!daemon.ok()) {
    lazypull::LogError("cannot start lazypull-snapshotter",
                       {{"error", daemon.status().ToString()}});
    std::fprintf(stderr, "lazypull-snapshotter: %s\n", daemon.status().ToString().c_str());
    return 1;
  }
  // Type=notify under systemd: containerd (ordered after us) starts once we serve.
  if (absl::Status s = lazypull::SdNotifyFromEnv("READY=1\nSTATUS=serving on " + config->address +
                                                 "\nMAINPID=" + std::to_string(::getpid()));
      !s.ok()) {
    lazypull::LogWarn("cannot notify systemd", {{"error", s.ToString()}});
  }
  int sig = 0;
  pid_t successor_pid = -1;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    // Upgrade in place: stop only once the successor waits for the root lock.
    absl::StatusOr<std::string> exe = lazypull::SelfExecutablePath();
    absl::StatusOr<pid_t> successor =
        exe.ok() ? lazypull::SpawnSuccessor(*exe, args, absl::Seconds(120)) : exe.status();
    if (!successor.ok()) {
      lazypull::LogError("upgrade failed; still serving",
                         {{"error", successor.status().ToString()}});
      continue;
    }
    // systemd follows the successor from now on (the unit has NotifyAccess=all).
    lazypull::SdNotifyFromEnv("MAINPID=" + std::to_string(*successor)).IgnoreError();
    successor_pid = *successor;
    break;
  }
  lazypull::LogInfo("shutting down", {{"signal", strsignal(sig)}});
  // Not when upgrading: systemd would take it for the service (now the successor) stopping.
  if (successor_pid < 0) lazypull::SdNotifyFromEnv("STOPPING=1").IgnoreError();
  (*daemon)->Shutdown();
  daemon->reset();
  lazypull::LogInfo("lazypull-snapshotter exited", {{"pid", ::getpid()}});
  return 0;
}
