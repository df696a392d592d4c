// Subprocess: a child process owned by the test. Killed (SIGTERM, then SIGKILL) and reaped on
// destruction, so a failing test never leaks a daemon. stdout/stderr go to a log file so a
// failure can show what the daemon said.
#ifndef LAZYPULL_TESTS_HARNESS_SUBPROCESS_H_
#define LAZYPULL_TESTS_HARNESS_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string output;  // stdout and stderr, interleaved
};

// Runs `argv` to completion (with /bin/sh -c when argv has one element containing a space is NOT
// done: pass {"/bin/sh","-c",...} yourself). Fails only if the process cannot be started or
// exceeds `timeout` (then it is killed).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::seconds timeout = std::chrono::seconds(300),
                                         const std::map<std::string, std::string>& env = {});

// Convenience: runs `/bin/sh -c script`.
absl::StatusOr<CommandResult> RunShell(const std::string& script,
                                       std::chrono::seconds timeout = std::chrono::seconds(300));

class Subprocess {
 public:
  Subprocess() = default;
  ~Subprocess();
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts `argv` with stdout+stderr appended to `log_path`. `env` entries are added to the
  // inherited environment. The child gets its own process group.
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                          const std::string& log_path,
                                          const std::map<std::string, std::string>& env = {});

  // Takes over `pid`, a process that became this process's child when its parent died (this
  // process was its subreaper, prctl PR_SET_CHILD_SUBREAPER), logging to `log_path`.
  static Subprocess Adopt(pid_t pid, std::string log_path);

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `sig` to the child. No-op if already reaped.
  void Signal(int sig);
  // Waits up to `timeout` for exit; returns the exit status (as from waitpid) or
  // DeadlineExceeded.
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  // SIGKILL and reap, as a crash would.
  void Kill();
  const std::string& log_path() const { return log_path_; }
  std::string ReadLog() const;

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  std::string log_path_;
};

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_HARNESS_SUBPROCESS_H_
