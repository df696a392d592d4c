// The man-page-like `lazypull-snapshotter --help`: NAME, SYNOPSIS and DESCRIPTION before
// CLI11's option list, the other sections after it (ManPageFormatter).
#ifndef LAZYPULL_SERVER_DAEMON_HELP_H_
#define LAZYPULL_SERVER_DAEMON_HELP_H_

#include <CLI/CLI.hpp>
#include <string>

namespace lazypull {

inline constexpr char kDaemonHelpHead[] = R"(NAME
    lazypull-snapshotter - containerd remote snapshotter that starts containers before their
    images are downloaded

SYNOPSIS
    lazypull-snapshotter [--config FILE] [--address SOCKET] [--root DIR] [--log-level LEVEL]
                         [--metrics-address ADDRESS]

DESCRIPTION
    Serves containerd's Snapshots API (a proxy_plugins snapshotter) on a unix socket. Layers
    in eStargz or zstd:chunked format are mounted read-only straight from the registry (FUSE,
    or EROFS over a FUSE blob file) and their file contents are fetched with HTTP range
    requests when first read, every chunk verified against its digest; other layers fall back
    to a normal overlayfs snapshot. Runs in the foreground and logs JSON lines on stderr.
    Flags override the config file, which overrides the built-in defaults.
)";

inline constexpr char kDaemonHelpTail[] = R"(CONFIGURATION
    TOML; every key is optional. Top level: root, address, socket_mode, log_level.
    Sections: [registry] (hosts.toml dir, credentials, timeouts), [cache] (max_bytes),
    [mount] (backend = auto|fuse|erofs, prefetch, background_fetch, fetch_timeout),
    [remote], [cri_keychain], [metrics] (address). The README lists the keys; each section's
    header documents them (server/config.h, fetcher/registry/registry_config.h, ...).

CONTAINERD
    containerd's config.toml needs:
        [proxy_plugins.lazypull]
          type = "snapshot"
          address = "/run/lazypull/lazypull.sock"
    and for Kubernetes (CRI) snapshotter = "lazypull" with
    disable_snapshot_annotations = false (see README, "Using it from containerd").

FILES
    /etc/lazypull/config.toml      default config of the systemd unit
    /run/lazypull/lazypull.sock    gRPC socket (default)
    /var/lib/lazypull              root (made 0700 at every start): metadata.db,
                                   snapshots/, cache/, status.json, lazypull.lock (one
                                   daemon per root)

METRICS
    Prometheus text at http://ADDRESS/metrics, [metrics] address = "127.0.0.1:9102" by
    default; "" turns it off. --metrics-host IP replaces the host only (the Helm chart
    passes the node's IP). A port in use fails the start.

SIGNALS
    SIGTERM, SIGINT    stop accepting RPCs, finish those in flight (10 s), unmount (with a
                       FUSE holder: hand the FUSE mounts over to it instead), exit 0.
    SIGHUP             graceful upgrade (systemctl reload): start the binary now at this
                       executable's path with --takeover; once it waits for the root lock,
                       stop as on SIGTERM and let it adopt the mounts. A successor that
                       fails to start leaves this daemon serving.

ENVIRONMENT
    NOTIFY_SOCKET      set by systemd for Type=notify: READY=1 is sent once serving.

EXIT STATUS
    0 after a clean shutdown (also a --takeover start stopped before it took over); 1 when
    the daemon cannot start (bad config, root locked by another instance without
    --takeover, socket or metrics port in use, ...), with the reason on stderr.

SEE ALSO
    lazypull(1) (lazypull --help: convert, status, health), containerd(8), ctr(8)
)";

// Prints kDaemonHelpHead, CLI11's option list under OPTIONS, then kDaemonHelpTail.
class ManPageFormatter : public CLI::Formatter {
 public:
  std::string make_description(const CLI::App*) const override { return kDaemonHelpHead; }
  std::string make_usage(const CLI::App*, std::string) const override { return ""; }
  std::string make_footer(const CLI::App*) const override { return kDaemonHelpTail; }
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_DAEMON_HELP_H_
