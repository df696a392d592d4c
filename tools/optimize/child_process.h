// ChildProcess: a program this process started (GNU tar, runc) and owns until it is reaped.
//
// stdin is /dev/null; stdout and stderr go to one file, so a failure can quote what the
// program said. Waiting uses a pidfd, so a deadline needs no polling loop and no signal
// handler. The destructor SIGKILLs and reaps a child still running: no process outlives its
// owner by accident.
//
// Thread-compatible: one owner thread.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_CHILD_PROCESS_H_
#define LAZYPULL_TOOLS_OPTIMIZE_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull::optimize {

using Deadline = std::chrono::steady_clock::time_point;

class ChildProcess {
 public:
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // Starts argv[0] (searched in PATH) with `argv`, stdout and stderr appended to
  // `output_path` (created 0600 if missing). Errors: InvalidArgument for an empty argv,
  // Internal (with errno text) if it cannot be spawned — a missing program included.
  static absl::StatusOr<ChildProcess> Start(const std::vector<std::string>& argv,
                                            const std::string& output_path);

  pid_t pid() const { return pid_; }

  // Waits for the exit until `deadline` and reaps the child. Returns the waitpid status;
  // DeadlineExceeded if it still runs (it keeps running); Internal on a wait error.
  absl::StatusOr<int> WaitUntil(Deadline deadline);

  // SIGKILL and reap. No-op once reaped.
  void Kill();

 private:
  ChildProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}

  pid_t pid_ = -1;  // -1 once reaped
  UniqueFd pidfd_;
};

// Waits until the process behind `pidfd` exits or `deadline` passes. True if it exited.
// Works for any process a pidfd can name, not only children.
bool WaitPidfd(int pidfd, Deadline deadline);

// "exit status 3", "killed by signal 9".
std::string DescribeWaitStatus(int status);

// Runs `argv` to completion with output captured in `output_path` (appended). OK if it exits
// 0. Otherwise Internal "<argv[0]> ...: <status>: <last 2 KiB of output>", or DeadlineExceeded
// after `timeout` (the child is killed).
absl::Status RunProgram(const std::vector<std::string>& argv, const std::string& output_path,
                        std::chrono::milliseconds timeout);

// The last `max_bytes` of the file at `path` ("" if unreadable).
std::string FileTail(const std::string& path, size_t max_bytes = 2048);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_CHILD_PROCESS_H_
