#include "tools/optimize/access_recorder.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "fmt/format.h"

namespace lazypull::optimize {
namespace {

constexpr char kDeletedSuffix[] = " (deleted)";

absl::StatusOr<struct statx> Statx(int dirfd, const char* path, int flags) {
  struct statx st = {};
  if (::statx(dirfd, path, flags, STATX_TYPE | STATX_MNT_ID, &st) != 0) {
    return absl::InternalError(fmt::format("statx {}: {}", path, strerror(errno)));
  }
  return st;
}

}  // namespace

std::string RelativeRecordedPath(const std::string& printed, const std::string& mount_point,
                                 bool via_mount_point) {
  if (printed.empty() || printed[0] != '/' || absl::EndsWith(printed, kDeletedSuffix)) return "";
  std::string_view p = printed;
  if (via_mount_point) {
    if (!p.starts_with(mount_point)) return "";
    p.remove_prefix(mount_point.size());
    if (p.empty() || p[0] != '/') return "";
  }
  while (!p.empty() && p[0] == '/') p.remove_prefix(1);
  return std::string(p);
}

absl::StatusOr<std::unique_ptr<AccessRecorder>> AccessRecorder::Start(
    const std::string& mount_point) {
  auto root = Statx(AT_FDCWD, mount_point.c_str(), 0);
  if (!root.ok()) return root.status();
  if (!(root->stx_mask & STATX_MNT_ID)) {
    return absl::InternalError("statx gives no mount id (kernel < 5.8?)");
  }
  // Unlimited queue: a program opening thousands of files must not overflow it between two
  // drains.
  UniqueFd fan(::fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
                               O_RDONLY | O_LARGEFILE | O_CLOEXEC));
  if (!fan.valid()) {
    int err = errno;
    std::string msg = fmt::format("fanotify_init: {}", strerror(err));
    return err == EPERM ? absl::PermissionDeniedError(msg + " (needs CAP_SYS_ADMIN)")
                        : absl::InternalError(msg);
  }
  if (::fanotify_mark(fan.get(), FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN | FAN_OPEN_EXEC,
                      AT_FDCWD, mount_point.c_str()) != 0) {
    return absl::InternalError(
        fmt::format("fanotify_mark filesystem of {}: {}", mount_point, strerror(errno)));
  }
  std::string clean = mount_point;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  return std::unique_ptr<AccessRecorder>(
      new AccessRecorder(std::move(fan), std::move(clean), root->stx_mnt_id));
}

absl::Status AccessRecorder::Drain() {
  alignas(struct fanotify_event_metadata) char buf[16384];
  for (;;) {
    ssize_t n = ::read(fan_.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return absl::OkStatus();
      return absl::InternalError(fmt::format("read fanotify events: {}", strerror(errno)));
    }
    if (n == 0) return absl::OkStatus();
    auto* m = reinterpret_cast<struct fanotify_event_metadata*>(buf);
    for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
      if (m->vers != FANOTIFY_METADATA_VERSION) {
        return absl::InternalError(fmt::format("fanotify metadata version {} (want {})", m->vers,
                                               FANOTIFY_METADATA_VERSION));
      }
      ++events_;
      if (m->mask & FAN_Q_OVERFLOW) ++overflows_;
      if (m->fd >= 0) {
        UniqueFd event_fd(m->fd);
        Record(event_fd.get());
      }
    }
  }
}

void AccessRecorder::Record(int event_fd) {
  auto st = Statx(event_fd, "", AT_EMPTY_PATH);
  if (!st.ok() || !S_ISREG(st->stx_mode)) return;
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", event_fd);
  char printed[4096];
  ssize_t len = ::readlink(link, printed, sizeof(printed) - 1);
  if (len <= 0) return;
  std::string rel =
      RelativeRecordedPath(std::string(printed, len), mount_point_, st->stx_mnt_id == mount_id_);
  if (rel.empty()) return;
  if (seen_.insert(rel).second) paths_.push_back(std::move(rel));
}

}  // namespace lazypull::optimize
