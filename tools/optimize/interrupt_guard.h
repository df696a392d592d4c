// InterruptGuard: turns SIGINT, SIGTERM and SIGHUP into an event the optimizer can poll, so
// an interrupted `convert --optimize` still kills its container, unmounts its overlay and
// removes its scratch directory instead of dying with them in place.
//
// While a guard lives, those signals are blocked in the calling thread and readable on fd();
// the previous mask is restored on destruction (a signal consumed through fd() is not
// delivered again). Programs started meanwhile get an empty mask (see ChildProcess).
// Thread-compatible: create, poll and destroy on one thread.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_INTERRUPT_GUARD_H_
#define LAZYPULL_TOOLS_OPTIMIZE_INTERRUPT_GUARD_H_

#include <signal.h>

#include "absl/status/status.h"
#include "base/unique_fd.h"

namespace lazypull::optimize {

class InterruptGuard {
 public:
  InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  ~InterruptGuard();

  // Readable (POLLIN) once one of the signals arrived; -1 if signalfd failed (then signals
  // keep their default action).
  int fd() const { return fd_.get(); }

  // Cancelled naming the signal if one arrived (consuming it), else OK. Never blocks.
  absl::Status Check();

 private:
  sigset_t previous_;
  UniqueFd fd_;
};

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_INTERRUPT_GUARD_H_
