#include "server/takeover.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/logging.h"
#include "base/unique_fd.h"

extern char** environ;

namespace lazypull {
namespace {

constexpr int kSuccessorReadyFd = 3;

// Starts readahead of a file the next start reads; errors do not matter (it only saves time).
void WillNeed(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.valid()) ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_WILLNEED);
}

// The files a start reads before it adopts the first mount: the metadata and the index bytes
// every lazy layer is re-opened from (server/remote/index_ranges.h).
void WarmRootFiles(const std::string& root) {
  WillNeed(root + "/metadata.db");
  WillNeed(root + "/metadata.db-wal");
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root + "/index-bytes", ec)) {
    WillNeed(e.path().string());
  }
}

void SignalReady(int ready_fd) {
  if (ready_fd < 0) return;
  const char byte = 1;
  while (::write(ready_fd, &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(ready_fd);
}

}  // namespace

absl::StatusOr<RootLock> AcquireRootLockForTakeover(const std::string& root, int ready_fd,
                                                    const sigset_t& stop_signals) {
  absl::StatusOr<RootLock> lock = RootLock::Acquire(root);
  if (lock.ok() || lock.status().code() != absl::StatusCode::kFailedPrecondition) {
    SignalReady(ready_fd);
    return lock;
  }
  LogInfo("another daemon serves this root; waiting for it to hand over",
          {{"root", root}, {"lock", std::string(lock.status().message())}});
  WarmRootFiles(root);
  SignalReady(ready_fd);
  const absl::Time since = absl::Now();
  for (;;) {
    // Sleeps 2 ms unless a stop signal arrives: a successor told to stop leaves everything as
    // it found it.
    timespec interval{0, 2'000'000};
    siginfo_t info;
    const int sig = ::sigtimedwait(&stop_signals, &info, &interval);
    if (sig > 0) {
      return absl::CancelledError(
          absl::StrCat("stopped by ", strsignal(sig), " while waiting for the root lock"));
    }
    lock = RootLock::Acquire(root);
    if (lock.ok()) {
      LogInfo("root lock taken over",
              {{"root", root}, {"waited_ms", absl::ToInt64Milliseconds(absl::Now() - since)}});
      return lock;
    }
    if (lock.status().code() != absl::StatusCode::kFailedPrecondition) return lock.status();
  }
}

absl::StatusOr<pid_t> SpawnSuccessor(const std::string& exe, const std::vector<std::string>& args,
                                     absl::Duration ready_timeout) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  UniqueFd ready_r(pipe_fds[0]);
  UniqueFd ready_w(pipe_fds[1]);
  // dup2 onto the same number would keep close-on-exec: keep the pipe above the target.
  if (ready_w.get() <= kSuccessorReadyFd) {
    ready_w.Reset(::fcntl(ready_w.get(), F_DUPFD_CLOEXEC, kSuccessorReadyFd + 1));
    if (!ready_w.valid()) return absl::ErrnoToStatus(errno, "fcntl F_DUPFD_CLOEXEC");
  }
  std::vector<std::string> argv_storage = {exe};
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--takeover") continue;
    if (args[i] == "--takeover-ready-fd") {
      ++i;
      continue;
    }
    if (absl::StartsWith(args[i], "--takeover-ready-fd=")) continue;
    argv_storage.push_back(args[i]);
  }
  argv_storage.insert(argv_storage.end(),
                      {"--takeover", "--takeover-ready-fd", std::to_string(kSuccessorReadyFd)});
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, ready_w.get(), kSuccessorReadyFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::ErrnoToStatus(rc, absl::StrCat("starting the successor ", exe));
  ready_w.Reset();  // EOF on ready_r once the successor exits

  pollfd p{ready_r.get(), POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(ready_timeout)));
  } while (n < 0 && errno == EINTR);
  char byte = 0;
  if (n == 1 && ::read(ready_r.get(), &byte, 1) == 1) {
    LogInfo("successor waits for the root lock", {{"successor_pid", pid}, {"exe", exe}});
    return pid;
  }
  if (n == 0) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return absl::UnavailableError(absl::StrCat(
      "the successor ", exe, " (pid ", pid, ") ",
      n == 0 ? absl::StrCat("did not report within ", absl::FormatDuration(ready_timeout))
             : absl::StrCat("exited (wait status ", status, ") before waiting for the root lock"),
      "; this daemon keeps serving"));
}

absl::StatusOr<std::string> SelfExecutablePath() {
  std::error_code ec;
  std::string path = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return absl::InternalError(absl::StrCat("readlink /proc/self/exe: ", ec.message()));
  constexpr char kDeleted[] = " (deleted)";
  if (absl::EndsWith(path, kDeleted)) path.resize(path.size() - std::strlen(kDeleted));
  return path;
}

}  // namespace lazypull
