// BlobFs: the daemon-wide FUSE file system of lazy layer data blobs. One mount (type
// fuse.lazypull, fsname lazypull:blobs, `allow_other,default_permissions`) whose root
// directory (0500) holds one read-only regular file (0400, owned by the daemon's user: blobs
// are private image data) per registered blob; the EROFS backend gives such a file to the kernel as
// a layer image's data device (`-o device=<dir>/<name>`), so EROFS owns metadata and page cache
// while this file system only serves the data blocks it misses.
//
// Files are opened with direct_io: EROFS caches the pages it reads, a second page cache on the
// blob would only double memory. A read is answered by the file's BlobSource; any error
// becomes EIO (the source logs what failed). File handles are stateless (requests are served
// by inode number alone).
//
// Lifetime: Add() registers a file named <name_hint>.<ino>; destroying the returned handle
// removes the name, but a file the kernel still holds open (an EROFS mount, detached or not)
// keeps working until the kernel releases it, so a detached mount still in use by an overlay is
// never cut off; then the source (and the LayerReader it holds) is let go. Inode numbers are
// never reused within a connection: the caller's (stable ones, below) or volatile ones from
// kVolatileInoBase up.
//
// Handover (issue 20): with a FUSE holder (BlobFsOptions::holder) the mount's connection is
// registered with the holder, and Mount adopts the connection the holder kept for `dir` (a
// previous daemon's blob file system, whose files EROFS mounts still hold open) instead of
// mounting. The kernel then keeps sending requests for the previous daemon's inode numbers,
// so a file that must survive a restart is added with a stable inode number (derived by the
// caller from the mount's identity) and, after the restart, added again with the same number
// and `reattach` (the kernel holds it open already). Until Settle(), a request for an inode
// of an adopted connection that was not added again yet waits for it (up to
// adoption_wait); after, it fails (ENOENT, so EIO in EROFS). Detach() hands the connection to
// a successor (graceful upgrade).
//
// A file of the previous daemon that nobody adds again because its mount has no registered
// owner any more — a lazy EROFS mount that outlived its layer's graduation, still used by an
// overlay — is served by the source BlobFsOptions::resolve gives for its inode number: such a
// file is anonymous (no name), presumed open once (the old mount's), and goes when the kernel
// releases it or Revoke cuts it off. Wake() lets waiting requests ask `resolve` again.
//
// Thread-safety: all methods are thread-safe; the FUSE callbacks run on the session's threads.
#ifndef LAZYPULL_MOUNT_EROFS_BLOB_FS_H_
#define LAZYPULL_MOUNT_EROFS_BLOB_FS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mount/fuse/fuse_session.h"
#include "mount/op_observer.h"

namespace lazypull::mount::erofs {

// The bytes of one blob file. Implementations are thread-safe.
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  virtual uint64_t size() const = 0;
  // Copies bytes [offset, offset + length) clamped at size() into `buf`; returns how many.
  virtual absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buf, size_t length) = 0;
};

struct BlobFsOptions {
  unsigned max_threads = 16;
  unsigned max_read = 1 << 20;
  std::chrono::milliseconds unmount_timeout{2000};
  std::shared_ptr<FsOpObserver> op_observer;  // null = none
  // The FUSE holder (null = none; must outlive the BlobFs): see above.
  FuseHolderClient* holder = nullptr;
  // How long a request for a not yet re-added file of an adopted connection waits.
  std::chrono::milliseconds adoption_wait{120000};
  // The source of a stable inode number of an adopted connection that no Add claims (see
  // above), or null if none (yet). Called without the file system's lock, on FUSE threads;
  // must be thread-safe. Null = none.
  std::function<std::shared_ptr<BlobSource>(uint64_t ino)> resolve;
};

// Inode numbers from here up are handed out by Add for files without a stable number.
inline constexpr uint64_t kVolatileInoBase = uint64_t{1} << 62;

// How BlobFs::Add registers a file.
struct BlobAddOptions {
  // A stable inode number (1 < ino < kVolatileInoBase), or 0 for a volatile one. A stable
  // number the file system still uses is replaced by a volatile one (logged).
  uint64_t ino = 0;
  // The kernel holds this file open already (through a mount of the previous daemon of an
  // adopted connection): one open is presumed, which the kernel's RELEASE ends.
  bool reattach = false;
};

class BlobFs : public FuseSessionUserdata {
 public:
  // A registered file; destruction removes its name (see above).
  class File {
   public:
    ~File();
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    const std::string& path() const { return path_; }
    const std::string& name() const { return name_; }
    uint64_t ino() const { return ino_; }
    // Requests for this file the kernel resent after an adoption (FUSE_NOTIFY_RESEND).
    uint64_t resent_requests() const { return resent_->load(); }

   private:
    friend class BlobFs;
    File(BlobFs* fs, std::string name, std::string path, uint64_t ino,
         std::shared_ptr<std::atomic<uint64_t>> resent)
        : fs_(fs),
          name_(std::move(name)),
          path_(std::move(path)),
          ino_(ino),
          resent_(std::move(resent)) {}
    BlobFs* fs_;
    std::string name_;
    std::string path_;
    uint64_t ino_;
    std::shared_ptr<std::atomic<uint64_t>> resent_;
  };

  // Mounts the file system at `dir` (an existing directory; a stale lazypull FUSE mount left
  // there by a crashed daemon is detached first), or adopts the connection the holder kept for
  // `dir`. Errors as FuseSession::Start.
  static absl::StatusOr<std::unique_ptr<BlobFs>> Mount(const std::string& dir,
                                                       const BlobFsOptions& options);
  // Unmounts (aborting the connection if an EROFS mount still holds a blob after the timeout),
  // unless Detach() handed it over.
  ~BlobFs();
  BlobFs(const BlobFs&) = delete;
  BlobFs& operator=(const BlobFs&) = delete;

  // Registers `source` as <dir>/<name_hint>.<ino>. `name_hint` must be a file-name-safe
  // string. The handle must not outlive the BlobFs.
  std::unique_ptr<File> Add(const std::string& name_hint, std::shared_ptr<BlobSource> source,
                            BlobAddOptions add = {});
  // Whether the connection was adopted from the holder (see above).
  bool adopted() const { return adopted_; }
  // Requests for files not re-added by now fail instead of waiting (see above). Idempotent.
  void Settle();
  // Requests waiting for a file of the adopted connection ask BlobFsOptions::resolve again.
  void Wake();
  // Files with an inode number in [first, last] that have no name any more (removed, or
  // resolved) stop being served: their reads fail from now on. Returns how many.
  size_t Revoke(uint64_t first, uint64_t last);
  // Graceful handover: stops serving after the requests in progress were answered and leaves
  // the mount to the holder for a successor (FuseSession::Detach); unmounts when the holder
  // does not keep it. Files may still be removed afterwards. Errors name the mount.
  absl::Status Detach();

  const std::string& dir() const { return dir_; }
  // Files the kernel or a registration still holds (for tests and status).
  size_t live_files() const;

  // The FUSE callbacks' view (public for the callback table in blob_fs.cc only).
  struct Entry {
    std::string name;
    uint64_t size = 0;
    // Dropped once the name is gone and no file is open (the kernel may keep the inode, and
    // so the entry, cached much longer; the source may hold a whole layer's index).
    std::shared_ptr<BlobSource> source;
    uint64_t nlookup = 0;
    uint64_t opens = 0;
    bool registered = true;
    std::shared_ptr<std::atomic<uint64_t>> resent = std::make_shared<std::atomic<uint64_t>>(0);
  };
  std::shared_ptr<Entry> Lookup(const std::string& name, uint64_t* ino);
  // Get, SourceOf and Open wait for a file of an adopted connection (see above).
  std::shared_ptr<Entry> Get(uint64_t ino);
  std::shared_ptr<BlobSource> SourceOf(uint64_t ino);
  void Forget(uint64_t ino, uint64_t n);
  bool Open(uint64_t ino);
  void Release(uint64_t ino);
  std::map<uint64_t, std::string> List();
  const BlobFsOptions& options() const { return options_; }

 private:
  BlobFs(std::string dir, BlobFsOptions options)
      : dir_(std::move(dir)), options_(std::move(options)) {}
  void Remove(const std::string& name);
  // Erases `ino` once nothing refers to it. Caller holds mu_.
  void MaybeEraseLocked(uint64_t ino);
  // The entry of `ino`, waiting while an adopted connection settles. Caller holds `lock`.
  std::shared_ptr<Entry> FindLocked(std::unique_lock<std::mutex>& lock, uint64_t ino);
  // The entry BlobFsOptions::resolve gives for `ino`, added, or null. Caller holds `lock`
  // (released while resolving).
  std::shared_ptr<Entry> ResolveLocked(std::unique_lock<std::mutex>& lock, uint64_t ino);
  void CountResent(uint64_t ino);

  const std::string dir_;
  const BlobFsOptions options_;
  std::unique_ptr<FuseSession> session_;
  bool adopted_ = false;  // set by Mount

  mutable std::mutex mu_;
  std::condition_variable added_;  // a file was added, or Settle
  std::map<uint64_t, std::shared_ptr<Entry>> inodes_;
  std::map<std::string, uint64_t> names_;
  uint64_t next_volatile_ = kVolatileInoBase;
  bool settling_ = false;
  // Resent requests for inodes not re-added yet, claimed by Add.
  std::map<uint64_t, uint64_t> resent_early_;
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_BLOB_FS_H_
