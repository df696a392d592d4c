// NodeSandbox: makes the calling test look like a fresh node without touching the machine's
// files, so a daemon can run with the exact absolute paths a deployment uses
// (/var/lib/lazypull, /run/lazypull, /etc/lazypull/config.toml, 127.0.0.1:9102):
//
//   - a private mount namespace (propagation private) and network namespace (loopback up);
//   - a fresh tmpfs over /run, an empty directory of `work_dir` over /var/lib;
//   - overlays over /etc and /usr (the machine's files below, a tmpfs above), so files can
//     be written there (a config under /etc, an image's binaries under /usr/bin) in the
//     sandbox only.
//
// Linux namespaces belong to threads: Enter affects the calling thread and every process it
// starts afterwards, so call it from the test's main thread before starting any daemon, and
// start them from that thread (the harness does). There is no way back; use one test binary
// per sandboxed suite. Needs root.
#ifndef LAZYPULL_TESTS_DEPLOY_NODE_SANDBOX_H_
#define LAZYPULL_TESTS_DEPLOY_NODE_SANDBOX_H_

#include <string>

#include "absl/status/status.h"

namespace lazypull::testing {

// `work_dir` holds the overlay's scratch directories; it must outlive the sandbox's use.
absl::Status EnterNodeSandbox(const std::string& work_dir);

// Bind-mounts `source` (a directory or file) onto `target` inside the sandbox, creating the
// target (and its parents) first.
absl::Status BindMount(const std::string& source, const std::string& target,
                       bool read_only = false);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_DEPLOY_NODE_SANDBOX_H_
