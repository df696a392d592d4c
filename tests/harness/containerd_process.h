// ContainerdProcess: a private, real containerd (Debian package) for one test, with its own
// root, state dir, gRPC socket and opt dir under a work dir, optionally wired to a proxy
// snapshotter. Stopped by PID (and waited for) when the object dies, so the next instance on the
// same root never hangs.
//
// containerd still writes /run/containerd/{runc,s,fifo} while containers run, so tests that run
// containers must not run concurrently: give them ctest RESOURCE_LOCK containerd.
#ifndef LAZYPULL_TESTS_HARNESS_CONTAINERD_PROCESS_H_
#define LAZYPULL_TESTS_HARNESS_CONTAINERD_PROCESS_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {

struct ContainerdOptions {
  // Unix socket of a proxy snapshotter; empty = no [proxy_plugins] entry.
  std::string proxy_snapshotter_socket;
  // Name under which the proxy snapshotter is registered (`--snapshotter NAME`).
  std::string proxy_snapshotter_name = "lazypull";
  // Enables the CRI plugin with `snapshotter = proxy_snapshotter_name` and
  // `disable_snapshot_annotations = false`. Off by default: the CRI plugin is then disabled,
  // which makes containerd start faster and touch nothing outside its dirs.
  bool enable_cri = false;
  // TOML keys placed directly in [plugins."io.containerd.grpc.v1.cri"] when enable_cri (e.g.
  // `sandbox_image = "127.0.0.1:5000/pause:v1"`). The CRI plugin's CNI dirs are always
  // <work_dir>/cni/{bin,net.d} (with no CNI config: only host-network pods can run).
  std::string cri_plugin_config;
  // Appended verbatim to the generated config.toml (TOML, config version 2).
  std::string extra_config;
  // containerd's --log-level.
  std::string log_level = "info";
};

class ContainerdProcess {
 public:
  // Writes `work_dir`/config.toml, starts `containerd --config ...` with root, state, socket and
  // opt dir below `work_dir`, and waits (up to 30 s) until `ctr version` answers. On failure the
  // returned error carries containerd's log. `work_dir` must exist and outlive the object.
  static absl::StatusOr<std::unique_ptr<ContainerdProcess>> Start(const std::string& work_dir,
                                                                  ContainerdOptions options = {});

  // Stops containerd (see Stop) if still running.
  ~ContainerdProcess();
  ContainerdProcess(const ContainerdProcess&) = delete;
  ContainerdProcess& operator=(const ContainerdProcess&) = delete;

  // gRPC unix socket of this containerd.
  const std::string& address() const { return address_; }
  const std::string& root() const { return root_; }
  const std::string& state() const { return state_; }
  const std::string& config_path() const { return config_path_; }
  pid_t pid() const { return process_.pid(); }

  // Runs `ctr --address <address> ARGS...` to completion. Fails only if ctr cannot be started or
  // exceeds `timeout`; a non-zero exit is reported in CommandResult::exit_code. A foreground
  // `run` whose task is `/bin/sh -c SCRIPT` (ARGS ending IMAGE ID /bin/sh -c SCRIPT) is run
  // again, up to 3 runs in all, when ctr lost the task's output to its stdout copy race (see
  // the .cc).
  absl::StatusOr<CommandResult> Ctr(const std::vector<std::string>& args,
                                    std::chrono::seconds timeout = std::chrono::seconds(120));

  // Like Ctr but a non-zero exit becomes an error carrying the command line and its output;
  // returns ctr's combined output on success.
  absl::StatusOr<std::string> CtrOk(const std::vector<std::string>& args,
                                    std::chrono::seconds timeout = std::chrono::seconds(120));

  // Pulls and unpacks `ref` into `snapshotter` in namespace `ns` the way containerd's CRI plugin
  // does (containerd client Pull + WithPullUnpack + snapshotters.AppendInfoHandlerWrapper), via
  // <build>/bin/lazypull-cripull, so Prepare carries containerd.io/snapshot.ref and the
  // containerd.io/snapshot/cri.* labels (`ctr images pull` sends none). Returns the tool's output
  // ("unpacked NAME DIGEST"); a failed pull is an error carrying its stderr.
  absl::StatusOr<std::string> CriPull(const std::string& ns, const std::string& ref,
                                      const std::string& snapshotter, bool plain_http = true,
                                      std::chrono::seconds timeout = std::chrono::seconds(300));

  // Kills every task left in any namespace (best effort, so a failed test does not leak
  // shims), then SIGTERM, waits up to 10 s for exit, SIGKILL otherwise; always reaps. Returns
  // an error if containerd had to be killed. Idempotent.
  absl::Status Stop();

  std::string ReadLog() const { return process_.ReadLog(); }

 private:
  ContainerdProcess() = default;
  void KillLeftoverTasks();

  std::string work_dir_, root_, state_, address_, config_path_;
  Subprocess process_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_CONTAINERD_PROCESS_H_
