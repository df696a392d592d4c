// lazypull-fuse-holder: keeps lazypull's FUSE connections alive across daemon restarts (see
// fuse_holder.h). Usage: lazypull-fuse-holder --socket PATH [--log-level LEVEL]. Runs in the
// foreground until SIGTERM/SIGINT; exit code 1 when it cannot listen.
#include <signal.h>
#include <sys/signalfd.h>

#include <cstring>
#include <iostream>
#include <string>

#include "base/logging.h"
#include "base/unique_fd.h"
#include "tools/fuse_holder/fuse_holder.h"

int main(int argc, char** argv) {
  std::string socket = "/var/lib/lazypull/fuse-holder.sock";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else if (a == "--log-level" && i + 1 < argc) {
      auto level = lazypull::ParseLogLevel(argv[++i]);
      if (!level.ok()) {
        std::cerr << level.status() << "\n";
        return 2;
      }
      lazypull::SetLogLevel(*level);
    } else {
      std::cerr << "usage: lazypull-fuse-holder [--socket PATH] [--log-level LEVEL]\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  lazypull::UniqueFd stop(signalfd(-1, &signals, SFD_CLOEXEC));
  auto holder = lazypull::fuse_holder::FuseHolder::Listen(socket);
  if (!holder.ok()) {
    lazypull::LogError("FUSE holder cannot start", {{"error", holder.status().ToString()}});
    return 1;
  }
  absl::Status s = (*holder)->Run(stop.get());
  if (!s.ok()) {
    lazypull::LogError("FUSE holder failed", {{"error", s.ToString()}});
    return 1;
  }
  lazypull::LogInfo(
      "FUSE holder exiting: the held connections end with it once no daemon serves them");
  return 0;
}
