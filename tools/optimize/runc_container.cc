#include "tools/optimize/runc_container.h"

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "base/logging.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::optimize {
namespace {

constexpr auto kKillWait = std::chrono::seconds(10);

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteWholeFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) return absl::InternalError(fmt::format("cannot write {}", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RuncContainer>> RuncContainer::Create(const RuncOptions& options,
                                                                     const ProcessSpec& process) {
  std::error_code ec;
  for (const std::string& d : {options.state_dir, options.bundle_dir}) {
    std::filesystem::create_directories(d, ec);
    if (ec) return absl::InternalError(fmt::format("mkdir {}: {}", d, ec.message()));
  }
  int previous = 0;
  prctl(PR_GET_CHILD_SUBREAPER, &previous, 0, 0, 0);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    return absl::InternalError(fmt::format("prctl(PR_SET_CHILD_SUBREAPER): {}", strerror(errno)));
  }
  std::unique_ptr<RuncContainer> c(new RuncContainer(options, previous));

  const std::string config_path = options.bundle_dir + "/config.json";
  std::filesystem::remove(config_path, ec);
  if (auto st = c->Runc({"spec", "--bundle", options.bundle_dir}); !st.ok()) return st;
  auto text = ReadWholeFile(config_path);
  if (!text.ok()) return text.status();
  nlohmann::json spec = nlohmann::json::parse(*text, nullptr, false);
  if (!spec.is_object()) return absl::InternalError("`runc spec` wrote no JSON object");
  ApplyProcessSpec(process, options.rootfs, spec);
  if (auto st = WriteWholeFile(config_path, spec.dump(2)); !st.ok()) return st;

  const std::string pid_path = options.bundle_dir + "/init.pid";
  c->created_ = true;  // from here on the destructor deletes, even after a failed create
  absl::Status st = c->Runc({"--root", options.state_dir, "create", "--bundle", options.bundle_dir,
                             "--pid-file", pid_path, options.id});
  if (!st.ok()) {
    return absl::FailedPreconditionError(fmt::format("the container could not start {}: {}",
                                                     process.args[0], std::string(st.message())));
  }
  auto pid_text = ReadWholeFile(pid_path);
  if (!pid_text.ok()) return pid_text.status();
  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*pid_text), &pid) || pid <= 0) {
    return absl::InternalError(fmt::format("runc wrote pid \"{}\"", *pid_text));
  }
  c->pid_ = pid;
  c->pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!c->pidfd_.valid()) {
    return absl::InternalError(fmt::format("pidfd_open({}): {}", pid, strerror(errno)));
  }
  return c;
}

absl::Status RuncContainer::Runc(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {options_.runc};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv, options_.output_path, options_.command_timeout);
}

absl::Status RuncContainer::Start() {
  return Runc({"--root", options_.state_dir, "start", options_.id});
}

void RuncContainer::Reap() {
  if (reaped_ || pid_ <= 0) return;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  // ECHILD: not our child after all (no subreaper); the status is unknown.
  wait_status_ = r == pid_ ? status : -1;
  reaped_ = true;
}

absl::StatusOr<int> RuncContainer::WaitUntil(Deadline deadline) {
  if (!reaped_) {
    if (!WaitPidfd(pidfd_.get(), deadline)) {
      return absl::DeadlineExceededError(fmt::format("container {} still runs", options_.id));
    }
    Reap();
  }
  return wait_status_;
}

absl::Status RuncContainer::Kill() {
  if (reaped_) return absl::OkStatus();
  absl::Status st = Runc({"--root", options_.state_dir, "kill", options_.id, "KILL"});
  if (!WaitPidfd(pidfd_.get(), std::chrono::steady_clock::now() + kKillWait)) {
    return absl::InternalError(fmt::format("container {} (pid {}) survived SIGKILL: {}",
                                           options_.id, pid_, st.ToString()));
  }
  Reap();
  return absl::OkStatus();
}

RuncContainer::~RuncContainer() {
  if (pid_ > 0 && !reaped_) {
    if (absl::Status st = Kill(); !st.ok()) {
      LogError("optimize: cannot kill container", {{"error", st.ToString()}});
    }
  }
  if (created_) {
    absl::Status st = Runc({"--root", options_.state_dir, "delete", "-f", options_.id});
    if (!st.ok() && pid_ > 0) {
      LogError("optimize: runc delete failed", {{"id", options_.id}, {"error", st.ToString()}});
    }
  }
  prctl(PR_SET_CHILD_SUBREAPER, previous_subreaper_, 0, 0, 0);
}

}  // namespace lazypull::optimize
