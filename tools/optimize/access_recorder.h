// AccessRecorder: records which regular files are opened on one filesystem, in the order of
// their first open, using fanotify (FAN_MARK_FILESYSTEM, FAN_OPEN | FAN_OPEN_EXEC).
//
// The mark covers the whole superblock, so opens are seen whichever mount or mount namespace
// they come through. Paths come from the event's file descriptor (/proc/self/fd): for a file
// opened through the mount at `mount_point` in this namespace they start with that path; for
// one opened inside a container whose root is that filesystem (runc's pivot_root into a bind
// of the overlay) the kernel prints it relative to the container's root, e.g. "/etc/a.conf".
// The event file's mount id tells the two apart; both become paths relative to the root of
// the filesystem ("etc/a.conf"). Files deleted by the time the event is read are skipped.
//
// Needs CAP_SYS_ADMIN. Thread-compatible: one thread calls Drain().
#ifndef LAZYPULL_TOOLS_OPTIMIZE_ACCESS_RECORDER_H_
#define LAZYPULL_TOOLS_OPTIMIZE_ACCESS_RECORDER_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull::optimize {

class AccessRecorder {
 public:
  // Starts recording opens on the filesystem mounted at `mount_point` (the root of that
  // mount). Errors: PermissionDenied without CAP_SYS_ADMIN, Internal for other fanotify or
  // statx failures (with errno text).
  static absl::StatusOr<std::unique_ptr<AccessRecorder>> Start(const std::string& mount_point);

  AccessRecorder(const AccessRecorder&) = delete;
  AccessRecorder& operator=(const AccessRecorder&) = delete;

  // Readable (POLLIN) when events wait. Owned by the recorder.
  int fd() const { return fan_.get(); }

  // Reads every queued event without blocking. Internal on a read error. A queue overflow
  // (not expected: the queue is unlimited) is counted in overflows().
  absl::Status Drain();

  // Relative paths of the regular files opened so far, in order of first open, each once.
  const std::vector<std::string>& paths() const { return paths_; }
  uint64_t events() const { return events_; }
  uint64_t overflows() const { return overflows_; }

 private:
  AccessRecorder(UniqueFd fan, std::string mount_point, uint64_t mount_id)
      : fan_(std::move(fan)), mount_point_(std::move(mount_point)), mount_id_(mount_id) {}

  void Record(int event_fd);

  UniqueFd fan_;
  std::string mount_point_;
  uint64_t mount_id_;
  std::vector<std::string> paths_;
  std::set<std::string> seen_;
  uint64_t events_ = 0;
  uint64_t overflows_ = 0;
};

// The path relative to the recorded filesystem's root for `printed`, the /proc/self/fd link
// text of an event's file: prefixed with `mount_point` when `via_mount_point` (opened through
// that mount), else absolute from a container's root. "" for a path outside the filesystem,
// a deleted file or a non-path ("anon_inode:...").
std::string RelativeRecordedPath(const std::string& printed, const std::string& mount_point,
                                 bool via_mount_point);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_ACCESS_RECORDER_H_
