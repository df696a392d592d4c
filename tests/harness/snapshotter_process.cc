#include "tests/harness/snapshotter_process.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

// The last `max_bytes` of a log, enough to explain a failure without flooding the test output.
std::string Tail(const std::string& log, size_t max_bytes = 8192) {
  return log.size() <= max_bytes ? log : "..." + log.substr(log.size() - max_bytes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SnapshotterProcess>> SnapshotterProcess::Start(
    const std::string& work_dir, SnapshotterOptions options) {
  return StartWith(work_dir, work_dir + "/root", work_dir + "/lazypull.sock", std::move(options));
}

absl::StatusOr<std::unique_ptr<SnapshotterProcess>> SnapshotterProcess::StartWith(
    const std::string& work_dir, const std::string& root, const std::string& socket,
    SnapshotterOptions options) {
  if (socket.size() >= 100) {
    return absl::InvalidArgumentError(
        fmt::format("snapshotter socket path too long for a unix socket: {}", socket));
  }
  std::unique_ptr<SnapshotterProcess> s(new SnapshotterProcess());
  s->work_dir_ = work_dir;
  s->root_ = root;
  s->socket_ = socket;
  s->options_ = std::move(options);
  if (s->options_.binary.empty()) {
    const char* env = getenv("LAZYPULL_SNAPSHOTTER_BIN");
    s->options_.binary = env != nullptr && *env != '\0' ? std::string(env)
                                                        : BinaryDir() + "/bin/lazypull-snapshotter";
  }
  if (!s->options_.config_toml.empty()) {
    absl::Status st = WriteFile(work_dir + "/config.toml", s->options_.config_toml);
    if (!st.ok()) return st;
  }
  absl::Status st = s->Launch();
  if (!st.ok()) return st;
  return s;
}

absl::Status SnapshotterProcess::Launch() {
  if (access(options_.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(fmt::format("snapshotter binary {} is missing", options_.binary));
  }
  std::vector<std::string> argv = {options_.binary, "--root",          root_, "--address", socket_,
                                   "--log-level",   options_.log_level};
  argv.insert(argv.end(), {"--metrics-address", options_.metrics_address});
  if (!options_.config_toml.empty()) {
    argv.push_back("--config");
    argv.push_back(work_dir_ + "/config.toml");
  }
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  auto proc = Subprocess::Start(argv, work_dir_ + "/snapshotter.log", options_.env);
  if (!proc.ok()) return proc.status();
  process_ = std::move(*proc);

  auto deadline = std::chrono::steady_clock::now() + options_.ready_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process_.running()) {
      return absl::UnavailableError(
          fmt::format("lazypull-snapshotter (root {}) exited before serving; log:\n{}", root_,
                      Tail(ReadLog())));
    }
    if (WaitForUnixSocket(socket_, std::chrono::milliseconds(50)).ok()) {
      return absl::OkStatus();
    }
  }
  process_.Kill();
  return absl::DeadlineExceededError(
      fmt::format("lazypull-snapshotter socket {} not ready after {} ms; log:\n{}", socket_,
                  options_.ready_timeout.count(), Tail(ReadLog())));
}

SnapshotterProcess::~SnapshotterProcess() { (void)Stop(); }

absl::Status SnapshotterProcess::Stop(std::chrono::milliseconds grace) {
  if (!process_.running()) return absl::OkStatus();
  process_.Signal(SIGTERM);
  auto status = process_.Wait(grace);
  if (!status.ok()) {
    process_.Kill();
    return absl::DeadlineExceededError(fmt::format(
        "lazypull-snapshotter did not exit within {} ms of SIGTERM and was killed; log:\n{}",
        grace.count(), Tail(ReadLog())));
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(
        fmt::format("lazypull-snapshotter exited with wait status {:#x} after SIGTERM; log:\n{}",
                    *status, Tail(ReadLog())));
  }
  return absl::OkStatus();
}

void SnapshotterProcess::Kill() { process_.Kill(); }

absl::Status SnapshotterProcess::Restart() {
  absl::Status stopped = Stop();
  absl::Status started = Launch();
  if (!started.ok()) return started;
  return stopped;
}

absl::Status SnapshotterProcess::Upgrade(const std::string& binary) {
  constexpr char kWaiting[] = "another daemon serves this root; waiting for it to hand over";
  // Polled every 2 ms: read only what was logged since (a debug log grows by megabytes).
  const size_t before = LogSize();
  SnapshotterOptions next = options_;
  if (!binary.empty()) next.binary = binary;
  std::vector<std::string> argv = {next.binary,
                                   "--root",
                                   root_,
                                   "--address",
                                   socket_,
                                   "--log-level",
                                   next.log_level,
                                   "--metrics-address",
                                   next.metrics_address,
                                   "--takeover"};
  if (!next.config_toml.empty()) {
    argv.push_back("--config");
    argv.push_back(work_dir_ + "/config.toml");
  }
  argv.insert(argv.end(), next.extra_args.begin(), next.extra_args.end());
  auto successor = Subprocess::Start(argv, work_dir_ + "/snapshotter.log", next.env);
  if (!successor.ok()) return successor.status();
  const auto deadline = std::chrono::steady_clock::now() + next.ready_timeout;
  while (LogFrom(before).find(kWaiting) == std::string::npos) {
    if (!successor->running() || std::chrono::steady_clock::now() > deadline) {
      successor->Kill();
      return absl::UnavailableError(
          fmt::format("the successor did not wait for the root lock; log:\n{}", Tail(ReadLog())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  absl::Status stopped = Stop();
  if (!stopped.ok()) {
    successor->Kill();
    return stopped;
  }
  process_ = std::move(*successor);
  options_ = std::move(next);
  return WaitServing(before, deadline);
}

size_t SnapshotterProcess::LogSize() const {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(log_path(), ec);
  return ec ? 0 : static_cast<size_t>(size);
}

std::string SnapshotterProcess::LogFrom(size_t offset) const {
  std::ifstream in(log_path(), std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status SnapshotterProcess::WaitServing(size_t from,
                                             std::chrono::steady_clock::time_point deadline) {
  const std::string serving = fmt::format("\"pid\":{}", process_.pid());
  while (true) {
    const std::string log = LogFrom(from);
    size_t at = log.rfind("lazypull-snapshotter serving");
    if (at != std::string::npos) {
      const size_t eol = log.find('\n', at);
      if (log.substr(at, eol == std::string::npos ? eol : eol - at).find(serving) !=
          std::string::npos) {
        break;
      }
    }
    if (!process_.running() || std::chrono::steady_clock::now() > deadline) {
      return absl::UnavailableError(
          fmt::format("the successor did not take over; log:\n{}", Tail(ReadLog())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WaitForUnixSocket(socket_, std::chrono::seconds(10));
}

absl::Status SnapshotterProcess::UpgradeBySighup() {
  constexpr std::string_view kSpawned = "successor waits for the root lock";
  const size_t before = LogSize();
  // The successor is the daemon's child: it becomes ours when the daemon exits.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    return absl::InternalError(fmt::format("PR_SET_CHILD_SUBREAPER: {}", strerror(errno)));
  }
  process_.Signal(SIGHUP);
  const auto deadline = std::chrono::steady_clock::now() + options_.ready_timeout;
  pid_t successor = -1;
  while (successor < 0) {
    const std::string log = LogFrom(before);
    const size_t at = log.find(kSpawned);
    const size_t pid_at = at == std::string::npos ? at : log.find("\"successor_pid\":", at);
    if (pid_at != std::string::npos) {
      successor = std::atoi(log.c_str() + pid_at + std::strlen("\"successor_pid\":"));
      break;
    }
    if (!process_.running() || std::chrono::steady_clock::now() > deadline) {
      ::prctl(PR_SET_CHILD_SUBREAPER, 0);
      return absl::UnavailableError(
          fmt::format("no successor after SIGHUP; log:\n{}", Tail(ReadLog())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  absl::StatusOr<int> status = process_.Wait(std::chrono::seconds(30));
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  if (!status.ok() || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    ::kill(successor, SIGKILL);
    process_.Kill();
    return absl::InternalError(
        fmt::format("the daemon did not exit cleanly after SIGHUP; log:\n{}", Tail(ReadLog())));
  }
  process_ = Subprocess::Adopt(successor, process_.log_path());
  return WaitServing(before, deadline);
}

std::set<std::string> LazyLayerDigests(const std::string& status_path) {
  std::set<std::string> out;
  absl::StatusOr<std::string> text = ReadFile(status_path);
  if (!text.ok()) return out;
  nlohmann::json status = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!status.is_object() || !status.contains("layers") || !status["layers"].is_array()) {
    return out;
  }
  for (const nlohmann::json& layer : status["layers"]) {
    if (layer.is_object() && layer.contains("digest") && layer["digest"].is_string()) {
      out.insert(layer["digest"].get<std::string>());
    }
  }
  return out;
}

}  // namespace lazypull::testing
