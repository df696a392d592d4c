#include "tests/harness/containerd_process.h"

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fmt/format.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

std::string BuildConfig(const std::string& work_dir, const ContainerdOptions& options) {
  std::string config = fmt::format(
      "version = 2\n"
      "root = \"{0}/root\"\n"
      "state = \"{0}/state\"\n"
      "{1}"
      "[grpc]\n  address = \"{0}/containerd.sock\"\n"
      "[ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n"
      "[debug]\n  level = \"{2}\"\n"
      "[metrics]\n  address = \"\"\n"
      // Else containerd installs into /opt/containerd.
      "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{0}/opt\"\n",
      work_dir, options.enable_cri ? "" : "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
      options.log_level);
  if (!options.proxy_snapshotter_socket.empty()) {
    config += fmt::format("[proxy_plugins.{}]\n  type = \"snapshot\"\n  address = \"{}\"\n",
                          options.proxy_snapshotter_name, options.proxy_snapshotter_socket);
  }
  if (options.enable_cri) {
    config += fmt::format(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n"
        // Pods get oom_score_adj -998 (sandbox) otherwise; lowering it needs CAP_SYS_RESOURCE,
        // which this machine's root lacks (runc init dies: "can't get final child's PID").
        "  restrict_oom_score_adj = true\n"
        "{2}"
        "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
        "    snapshotter = \"{0}\"\n"
        "    disable_snapshot_annotations = false\n"
        // Defining the runc table drops the default runtime_type: without it RunPodSandbox
        // fails with "container.Runtime.Name must be set".
        "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
        "      runtime_type = \"io.containerd.runc.v2\"\n"
        "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n"
        "      SystemdCgroup = false\n"
        // Else the CRI plugin creates and watches /etc/cni/net.d on the host.
        "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
        "    bin_dir = \"{1}/cni/bin\"\n"
        "    conf_dir = \"{1}/cni/net.d\"\n",
        options.proxy_snapshotter_socket.empty() ? "overlayfs" : options.proxy_snapshotter_name,
        work_dir, options.cri_plugin_config.empty() ? "" : options.cri_plugin_config + "\n");
  }
  config += options.extra_config;
  return config;
}

// Printed by `/bin/sh -c` tasks of `ctr run` after their script (see ContainerdProcess::Ctr).
constexpr char kRunEndMarker[] = "lazypull-harness-run-end";

std::vector<std::string> NonEmptyLines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipWhitespace());
}

}  // namespace

absl::StatusOr<std::unique_ptr<ContainerdProcess>> ContainerdProcess::Start(
    const std::string& work_dir, ContainerdOptions options) {
  std::unique_ptr<ContainerdProcess> c(new ContainerdProcess());
  c->work_dir_ = work_dir;
  c->root_ = work_dir + "/root";
  c->state_ = work_dir + "/state";
  c->address_ = work_dir + "/containerd.sock";
  c->config_path_ = work_dir + "/config.toml";
  if (c->address_.size() >= 100) {
    return absl::InvalidArgumentError(
        fmt::format("containerd socket path too long for a unix socket: {}", c->address_));
  }
  absl::Status st = WriteFile(c->config_path_, BuildConfig(work_dir, options));
  if (!st.ok()) return st;
  auto proc =
      Subprocess::Start({"containerd", "--config", c->config_path_}, work_dir + "/containerd.log");
  if (!proc.ok()) return proc.status();
  c->process_ = std::move(*proc);

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string last_output;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!c->process_.running()) {
      return absl::UnavailableError(
          fmt::format("containerd exited at start; log:\n{}", c->ReadLog()));
    }
    auto r = c->Ctr({"version"}, std::chrono::seconds(10));
    if (r.ok() && r->exit_code == 0) return c;
    if (r.ok()) last_output = r->output;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      fmt::format("containerd at {} did not answer `ctr version` within 30 s (last: {}); log:\n{}",
                  c->address_, last_output, c->ReadLog()));
}

ContainerdProcess::~ContainerdProcess() { (void)Stop(); }

absl::StatusOr<CommandResult> ContainerdProcess::Ctr(const std::vector<std::string>& args,
                                                     std::chrono::seconds timeout) {
  std::vector<std::string> argv = {"ctr", "--address", address_};
  argv.insert(argv.end(), args.begin(), args.end());
  const size_t n = argv.size();
  const auto run = std::find(args.begin(), args.end(), "run");
  const bool detached = run != args.end() && (std::find(run, args.end(), "-d") != args.end() ||
                                              std::find(run, args.end(), "--detach") != args.end());
  const bool shell_task = run != args.end() && !detached && n >= 3 && argv[n - 3] == "/bin/sh" &&
                          argv[n - 2] == "-c" && args.end() - run >= 6;
  if (!shell_task) return RunCommand(argv, timeout);

  // Containerd's stdout copy race (ctr 1.6 `run`): ctr copies the task's stdout from a fifo
  // and can stop copying when the task exits, losing the output's tail or all of it (the kind
  // of loss of containerd/containerd#770). So a `/bin/sh -c SCRIPT` task runs SCRIPT, pauses
  // (which makes the race rare), then prints an end marker and exits with SCRIPT's code. A run
  // that exited 0 without the marker lost output to that race, since the task printed the
  // marker before exiting 0; only that `ctr run` is retried, after deleting the container it
  // may have left. Any other outcome (a failed run, a non-zero exit) is returned as it is.
  argv[n - 1] = absl::StrCat("{ ", argv[n - 1], "\n}; lazypull_rc=$?; sleep 0.3; echo ",
                             kRunEndMarker, "; exit $lazypull_rc");
  std::string ns = "default";
  for (auto it = args.begin(); it != run; ++it) {
    if ((*it == "-n" || *it == "--namespace") && it + 1 != run) ns = *(it + 1);
  }
  const std::string& container_id = argv[n - 4];
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    absl::StatusOr<CommandResult> r = RunCommand(argv, timeout);
    if (!r.ok()) return r;
    const size_t marker = r->output.rfind(std::string(kRunEndMarker) + "\n");
    if (marker != std::string::npos) {
      r->output.erase(marker, std::strlen(kRunEndMarker) + 1);
      return r;
    }
    if (r->exit_code != 0 || attempt == kAttempts) return r;
    fprintf(stderr,
            "[harness] `ctr run` of %s lost its output to ctr's stdout copy race "
            "(got %zu bytes); running it again\n",
            container_id.c_str(), r->output.size());
    (void)RunCommand(
        {"ctr", "--address", address_, "-n", ns, "tasks", "delete", "-f", container_id},
        std::chrono::seconds(30));
    (void)RunCommand({"ctr", "--address", address_, "-n", ns, "containers", "delete", container_id},
                     std::chrono::seconds(30));
  }
}

absl::StatusOr<std::string> ContainerdProcess::CtrOk(const std::vector<std::string>& args,
                                                     std::chrono::seconds timeout) {
  auto r = Ctr(args, timeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        fmt::format("`ctr {}` exited {}: {}", absl::StrJoin(args, " "), r->exit_code, r->output));
  }
  return r->output;
}

absl::StatusOr<std::string> ContainerdProcess::CriPull(const std::string& ns,
                                                       const std::string& ref,
                                                       const std::string& snapshotter,
                                                       bool plain_http,
                                                       std::chrono::seconds timeout) {
  std::vector<std::string> argv = {BinaryDir() + "/bin/lazypull-cripull",
                                   "--address",
                                   address_,
                                   "--namespace",
                                   ns,
                                   "--snapshotter",
                                   snapshotter,
                                   fmt::format("--timeout={}s", timeout.count())};
  if (plain_http) argv.push_back("--plain-http");
  argv.push_back(ref);
  auto r = RunCommand(argv, timeout + std::chrono::seconds(10));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(fmt::format("lazypull-cripull {} into {} (ns {}) exited {}: {}", ref,
                                           snapshotter, ns, r->exit_code, r->output));
  }
  return r->output;
}

void ContainerdProcess::KillLeftoverTasks() {
  auto namespaces = Ctr({"namespaces", "ls", "-q"}, std::chrono::seconds(10));
  if (!namespaces.ok() || namespaces->exit_code != 0) return;
  for (const std::string& ns : NonEmptyLines(namespaces->output)) {
    auto tasks = Ctr({"-n", ns, "tasks", "ls", "-q"}, std::chrono::seconds(10));
    if (!tasks.ok() || tasks->exit_code != 0) continue;
    for (const std::string& id : NonEmptyLines(tasks->output)) {
      (void)Ctr({"-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id}, std::chrono::seconds(10));
      (void)Ctr({"-n", ns, "tasks", "delete", "-f", id}, std::chrono::seconds(20));
    }
  }
}

absl::Status ContainerdProcess::Stop() {
  if (!process_.running()) return absl::OkStatus();
  KillLeftoverTasks();
  process_.Signal(SIGTERM);
  if (process_.Wait(std::chrono::seconds(10)).ok()) return absl::OkStatus();
  process_.Kill();
  return absl::DeadlineExceededError(
      fmt::format("containerd (root {}) ignored SIGTERM for 10 s and was killed", root_));
}

}  // namespace lazypull::testing
