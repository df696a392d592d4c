#include "tests/harness/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::testing {
namespace {

std::vector<char*> ToArgv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

pid_t Spawn(const std::vector<std::string>& argv, int out_fd,
            const std::map<std::string, std::string>& env) {
  auto cargv = ToArgv(argv);
  pid_t pid = fork();
  if (pid != 0) return pid;
  setpgid(0, 0);
  int devnull = open("/dev/null", O_RDONLY);
  dup2(devnull, 0);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  execvp(cargv[0], cargv.data());
  dprintf(2, "exec %s: %s\n", cargv[0], strerror(errno));
  _exit(127);
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::seconds timeout,
                                         const std::map<std::string, std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  char path[] = "/tmp/lazypull-cmd-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return absl::InternalError("mkstemp failed");
  unlink(path);
  pid_t pid = Spawn(argv, fd, env);
  if (pid < 0) {
    close(fd);
    return absl::InternalError("fork failed");
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      close(fd);
      return absl::DeadlineExceededError(fmt::format("command timed out: {}", argv[0]));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  lseek(fd, 0, SEEK_SET);
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) result.output.append(buf, n);
  close(fd);
  return result;
}

absl::StatusOr<CommandResult> RunShell(const std::string& script, std::chrono::seconds timeout) {
  return RunCommand({"/bin/sh", "-c", script}, timeout);
}

Subprocess::~Subprocess() { Stop(); }

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      status_(other.status_),
      log_path_(std::move(other.log_path_)) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    Stop();
    pid_ = std::exchange(other.pid_, -1);
    status_ = other.status_;
    log_path_ = std::move(other.log_path_);
  }
  return *this;
}

absl::StatusOr<Subprocess> Subprocess::Start(const std::vector<std::string>& argv,
                                             const std::string& log_path,
                                             const std::map<std::string, std::string>& env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(fmt::format("open {}: {}", log_path, strerror(errno)));
  pid_t pid = Spawn(argv, fd, env);
  close(fd);
  if (pid < 0) return absl::InternalError("fork failed");
  Subprocess p;
  p.pid_ = pid;
  p.log_path_ = log_path;
  return p;
}

Subprocess Subprocess::Adopt(pid_t pid, std::string log_path) {
  Subprocess p;
  p.pid_ = pid;
  p.log_path_ = std::move(log_path);
  return p;
}

bool Subprocess::running() {
  if (pid_ < 0) return false;
  pid_t r = waitpid(pid_, &status_, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void Subprocess::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

absl::StatusOr<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0) {
    pid_t r = waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError("process still running");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

void Subprocess::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (!Wait(grace).ok()) Kill();
}

void Subprocess::Kill() {
  if (pid_ <= 0) return;
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
  waitpid(pid_, &status_, 0);
  pid_ = -1;
}

std::string Subprocess::ReadLog() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace lazypull::testing
