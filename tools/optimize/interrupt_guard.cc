#include "tools/optimize/interrupt_guard.h"

#include <pthread.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "fmt/format.h"

namespace lazypull::optimize {
namespace {

sigset_t Signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

InterruptGuard::InterruptGuard() {
  sigset_t set = Signals();
  pthread_sigmask(SIG_BLOCK, &set, &previous_);
  fd_.Reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd_.valid()) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

InterruptGuard::~InterruptGuard() {
  if (fd_.valid()) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

absl::Status InterruptGuard::Check() {
  if (!fd_.valid()) return absl::OkStatus();
  struct signalfd_siginfo info;
  if (::read(fd_.get(), &info, sizeof(info)) != sizeof(info)) return absl::OkStatus();
  return absl::CancelledError(fmt::format("interrupted by signal {} ({})", info.ssi_signo,
                                          strsignal(static_cast<int>(info.ssi_signo))));
}

}  // namespace lazypull::optimize
