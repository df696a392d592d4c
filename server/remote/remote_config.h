// RemoteConfig: the `[remote]` TOML section — how remote (lazy) snapshots are restored and
// reported.
//
//   [remote]
//   enabled = true                 # false: every layer is pulled normally by containerd
//   fail_on_restore_error = false  # true: a remote layer that cannot be re-mounted at start
//                                  # fails the daemon start (default: its snapshots answer
//                                  # Mounts with UNAVAILABLE)
//   restore_concurrency = 4        # layers re-mounted in parallel at start
//   status_interval_ms = 2000      # how often <root>/status.json is rewritten
//   manifest_cache_ms = 300000     # how long a resolved tag's manifest is reused
//   preload_layers = true          # on an image's first lazy layer, open the indexes of its
//                                  # other layers in parallel (their Prepares then only mount)
//   preload_lifetime_ms = 600000   # a preloaded index unused this long is dropped (its
//                                  # image's pull was abandoned)
//
// Value type; thread-compatible.
#ifndef LAZYPULL_SERVER_REMOTE_REMOTE_CONFIG_H_
#define LAZYPULL_SERVER_REMOTE_REMOTE_CONFIG_H_

#include <toml++/toml.h>

#include <chrono>
#include <cstddef>

#include "absl/status/statusor.h"

namespace lazypull::remote {

struct RemoteConfig {
  bool enabled = true;
  bool fail_on_restore_error = false;
  size_t restore_concurrency = 4;
  std::chrono::milliseconds status_interval{2000};
  std::chrono::milliseconds manifest_cache{300000};
  bool preload_layers = true;
  std::chrono::milliseconds preload_lifetime{600000};
};

// Parses the `[remote]` table itself. InvalidArgument naming `remote.<key>` for unknown keys,
// wrong types or non-positive numbers.
absl::StatusOr<RemoteConfig> ParseRemoteConfig(const toml::table& section);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_REMOTE_CONFIG_H_
