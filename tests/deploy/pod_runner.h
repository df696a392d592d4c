// PodRunner: runs the lazypull container of a rendered DaemonSet on this machine the way the
// kubelet and runc would run it on a node, so a test proves that the chart's pod works:
//
//   - the image's binaries: <build>/bin/{lazypull-snapshotter,lazypull} at /usr/bin (the
//     paths scripts/build-image.sh gives them);
//   - every volumeMount from its volume: hostPath (type checked, DirectoryOrCreate created,
//     bind-mounted when the mount path differs, read-only when asked), configMap and secret
//     (files written from the rendered ConfigMap / the given Secret data, `items` and
//     `subPath` honoured);
//   - exactly the container's command + args, with its env (values, and the downward API's
//     status.hostIP = 127.0.0.1) and $(VAR) references expanded as the kubelet does; probes
//     run their exec commands as the kubelet.
//
// Container and node share one mount namespace here (a NodeSandbox, see node_sandbox.h):
// what the container mounts is what the node sees, as Bidirectional propagation makes it in
// Kubernetes. Not thread-safe.
#ifndef LAZYPULL_TESTS_DEPLOY_POD_RUNNER_H_
#define LAZYPULL_TESTS_DEPLOY_POD_RUNNER_H_

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {

// Secret name → key → content (the cluster's Secrets the pod refers to).
using SecretData = std::map<std::string, std::map<std::string, std::string>>;

class PodRunner {
 public:
  // Prepares the volumes of `objects`' DaemonSet (its first container) under `work_dir` and
  // starts the container's process, logging to <work_dir>/pod.log. Errors name the volume or
  // the missing object.
  static absl::StatusOr<std::unique_ptr<PodRunner>> Start(const nlohmann::json& objects,
                                                          const std::string& work_dir,
                                                          const SecretData& secrets = {});
  // Stops the process (see Stop) and detaches the volume mounts.
  ~PodRunner();

  // Runs the exec command of `probe` ("startupProbe", "livenessProbe", "readinessProbe").
  absl::StatusOr<CommandResult> RunProbe(const std::string& probe) const;
  // Runs the startup probe every periodSeconds until it passes, at most failureThreshold
  // times, as the kubelet does; then the readiness probe must pass.
  absl::Status WaitStarted();
  // SIGTERM, then SIGKILL after terminationGracePeriodSeconds. OK only for a clean exit 0.
  absl::Status Stop();

  const std::vector<std::string>& argv() const { return argv_; }
  const nlohmann::json& container() const { return container_; }
  pid_t pid() const { return process_.pid(); }
  std::string ReadLog() const { return process_.ReadLog(); }

 private:
  PodRunner() = default;
  absl::Status PrepareVolumes(const nlohmann::json& objects, const SecretData& secrets);

  std::string work_dir_;
  nlohmann::json pod_spec_;
  nlohmann::json container_;
  std::vector<std::string> argv_;
  Subprocess process_;
  bool stopped_ = false;
  std::vector<std::string> mounts_;  // the volumes' bind mounts, detached on destruction
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_DEPLOY_POD_RUNNER_H_
