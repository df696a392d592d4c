// Atomic, durable replacement of a file: the one way lazypull persists state it must find again
// after a crash or a power loss (status.json, EROFS metadata images, downloaded blobs, OCI
// layouts).
//
// The protocol: write a temp file `<path>.tmp-XXXXXX` in the target's own directory (so the
// rename cannot cross file systems), fsync it, rename it over `path`, fsync the directory (so
// the rename itself survives a power loss). Readers see either the old file (or none) or the
// whole new one, never a prefix. A failure before the rename unlinks the temp file and leaves
// `path` as it was; a crash can leave a `<path>.tmp-*` file behind, never a torn `path`.
#ifndef LAZYPULL_BASE_ATOMIC_FILE_H_
#define LAZYPULL_BASE_ATOMIC_FILE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace lazypull {

// A new version of a file being written; it replaces the file only on Commit(). Destroying an
// uncommitted AtomicFile removes its temp file (the target is untouched).
//
// Move-only; not thread-safe (one writer; concurrent pwrite() on fd() is the caller's affair).
class AtomicFile {
 public:
  // Creates the temp file next to `path` with exactly `mode` (umask does not apply: the file's
  // permissions are part of the state). Errors (errno-mapped) name the temp path.
  static absl::StatusOr<AtomicFile> Create(std::string path, mode_t mode);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  // The temp file, open for writing; for callers that pwrite() at offsets. Valid until Commit().
  int fd() const { return fd_.get(); }
  const std::string& temp_path() const { return temp_; }

  // Writes all of `data` at the current file offset (retries short writes and EINTR).
  absl::Status Append(std::string_view data);

  // fsync the temp file, close it, rename it to the target, fsync the directory. Errors name
  // the step and the paths; a failure before the rename removes the temp file and leaves the
  // target as it was. A failure of the directory's fsync (after the rename) leaves the new
  // content in place, but not known to be durable. Call at most once.
  absl::Status Commit();

 private:
  AtomicFile(std::string path, std::string temp, UniqueFd fd)
      : path_(std::move(path)), temp_(std::move(temp)), fd_(std::move(fd)) {}
  void Abandon();  // removes the temp file if it is still ours

  std::string path_;
  std::string temp_;  // empty once committed or abandoned
  UniqueFd fd_;
};

// Replaces `path` by `content` with the protocol above (AtomicFile::Create + Append + Commit).
absl::Status WriteFileAtomically(const std::string& path, std::string_view content, mode_t mode);

// fsync of the directory `dir`, so the creation, rename or removal of an entry in it is
// durable. Errors (errno-mapped) name the directory.
absl::Status SyncDirectory(const std::string& dir);

}  // namespace lazypull

#endif  // LAZYPULL_BASE_ATOMIC_FILE_H_
