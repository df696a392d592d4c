// DaemonConfig: the snapshotter daemon's TOML configuration. Every key is optional; with no
// file the defaults apply. Command-line flags override the file.
//
//   root = "/var/lib/lazypull"                # snapshots, metadata.db, lazypull.lock
//   address = "/run/lazypull/lazypull.sock"   # gRPC unix socket
//   socket_mode = "0660"                      # octal string (or integer 432)
//   log_level = "info"                        # debug | info | warn | error
//   [mount]
//   backend = "fuse"                          # fuse | erofs | auto (remote layers, issue 5)
//   [metrics]
//   address = "127.0.0.1:9102"                # Prometheus GET /metrics; "" = off
//   [soci]
//   v1 = false                                # also find SOCI v1 indexes (referrers)
//
// Other modules read their own sections ([registry], [cache], ...) from table().
#ifndef LAZYPULL_SERVER_CONFIG_H_
#define LAZYPULL_SERVER_CONFIG_H_

#include <toml++/toml.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lazypull {

enum class MountBackend { kFuse, kErofs, kAuto };

absl::string_view MountBackendName(MountBackend backend);

struct DaemonConfig {
  std::string root = "/var/lib/lazypull";
  std::string address = "/run/lazypull/lazypull.sock";
  unsigned socket_mode = 0660;
  std::string log_level = "info";
  MountBackend mount_backend = MountBackend::kAuto;  // the configured [mount] backend
  // [metrics] address: where GET /metrics is served (metrics/metrics_server.h for the forms);
  // "" = no metrics endpoint. A port in use fails the daemon's start, so tests that start
  // daemons in parallel set "" (the test harness's SnapshotterProcess does).
  std::string metrics_address = "127.0.0.1:9102";
  // [soci] v1: look for SOCI v1 indexes (referrers of the image manifest) when the image has
  // no v2 index. Off by default, as in soci-snapshotter >= 0.10: anyone who can push to a
  // repository could attach an index to an existing image and change how it runs, while a
  // v2 index is part of the (digest-pinned) image itself (soci_index_finder.h).
  bool soci_v1 = false;

  // The whole parsed file (empty table without a file). Never null.
  std::shared_ptr<const toml::table> table = std::make_shared<toml::table>();
};

// Parses TOML text. `source` names it in errors. InvalidArgument for syntax errors (with line
// and column), wrong types, or unknown values of known keys. Unknown keys are ignored so other
// modules can add sections.
absl::StatusOr<DaemonConfig> ParseDaemonConfig(absl::string_view text, absl::string_view source);

// Reads and parses `path`; "" → defaults. NotFound if the file does not exist.
absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path);

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_CONFIG_H_
