// RuncContainer: a throw-away runc container this process created and owns: created, then
// started, waited for with a deadline, killed if need be, and always `runc delete -f`-ed on
// destruction.
//
// runc runs with its own state directory (`runc --root`), so it never meets containerd's
// containers. The container's stdout and stderr (and runc's own messages) go to one file.
//
// Exit status: after `runc create` returns, the container's init process is orphaned; this
// process is made a child subreaper (prctl PR_SET_CHILD_SUBREAPER) while a RuncContainer
// lives, so init becomes its child and its exit status can be collected. The previous
// setting is restored on destruction. Thread-compatible: one owner thread, and one
// RuncContainer per process at a time.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_RUNC_CONTAINER_H_
#define LAZYPULL_TOOLS_OPTIMIZE_RUNC_CONTAINER_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "tools/optimize/child_process.h"
#include "tools/optimize/container_spec.h"

namespace lazypull::optimize {

struct RuncOptions {
  std::string runc = "runc";  // the runc binary
  std::string id;             // container id, unique on the host
  std::string state_dir;      // `runc --root`, created if missing
  std::string bundle_dir;     // gets config.json, created if missing
  std::string rootfs;         // absolute path of the root filesystem
  std::string output_path;    // container and runc output (appended)
  std::chrono::milliseconds command_timeout = std::chrono::seconds(60);  // per runc call
};

class RuncContainer {
 public:
  // Writes the bundle (`runc spec`, then ApplyProcessSpec) and runs `runc create`: the
  // container exists, its process is set up but has not run the program yet (it waits for
  // Start). Errors: FailedPrecondition quoting runc when the process cannot be set up (e.g.
  // the program does not exist in the image); Internal for other failures. Nothing is left
  // behind on error.
  static absl::StatusOr<std::unique_ptr<RuncContainer>> Create(const RuncOptions& options,
                                                               const ProcessSpec& process);

  RuncContainer(const RuncContainer&) = delete;
  RuncContainer& operator=(const RuncContainer&) = delete;
  // Kills what still runs and `runc delete -f`s the container; errors are logged.
  ~RuncContainer();

  // Lets the program run (`runc start`).
  absl::Status Start();

  // Waits until the container's process exits or `deadline`. Returns its wait status
  // (-1 if it could not be collected), or DeadlineExceeded while it still runs.
  absl::StatusOr<int> WaitUntil(Deadline deadline);

  // `runc kill <id> KILL` and waits (bounded) until the process is gone.
  absl::Status Kill();

  // The init process's pidfd: readable once it exited.
  int pidfd() const { return pidfd_.get(); }
  pid_t pid() const { return pid_; }

 private:
  RuncContainer(RuncOptions options, int previous_subreaper)
      : options_(std::move(options)), previous_subreaper_(previous_subreaper) {}

  absl::Status Runc(const std::vector<std::string>& args);
  void Reap();

  RuncOptions options_;
  int previous_subreaper_;
  bool created_ = false;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = -1;
  UniqueFd pidfd_;
};

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_RUNC_CONTAINER_H_
