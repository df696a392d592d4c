// PassthroughFiles: which opens of one FUSE layer mount go to a backing file in the kernel
// (FUSE passthrough, fuse_passthrough_abi.h) and which stay on the daemon's read path.
//
// A regular file opens in passthrough mode when every byte of it is local and verified in the
// chunk cache (LayerReader::LocalFileSpans); otherwise, and when passthrough is unavailable,
// the open is an ordinary cached one and reads reach the daemon as before.
//   - Backing file: a file stored as one chunk is backed by its chunk-cache file (it holds
//     exactly the file's bytes). A larger one needs one file holding all of its bytes: a copy
//     assembled in this process from its verified chunk files (<dir>/files/<ino>, holes left
//     sparse), kept until the layer is unmounted. Nothing read from disk unverified ever
//     backs a file.
//   - Copies never make an open wait: the open that finds a multi-chunk file local without a
//     copy is answered in cached mode (counted: deferred_opens) and the copy is assembled on
//     this mount's copier thread; opens after it is done (once the inode's cached opens are
//     released, see io modes) get passthrough.
//   - Disk budget: a copy holds its file's bytes a second time, so it is charged to the chunk
//     cache's budget before it is written (ChunkCache::ReserveExternalBytes, account
//     "<dir>/files/<ino>": chunks are evicted to make room, and a copy that cannot fit is not
//     made) and released when it is deleted (unmount). Once it exists the copy is the file's
//     source of truth: its chunks are moved to the cold end of the cache's LRU (MakeColdest),
//     so the budget sheds those duplicate bytes before any other chunk, and READs of the file
//     (cached opens) are served from the copy, so evicted chunks are not fetched again. The
//     chunks are not deleted outright: they are shared by digest with other files and layers
//     (and read by the EROFS backend's graduation), and they outlive the copy, which goes
//     with the mount — deleting them would turn every remount or restart into refetches.
//     So on disk: chunks + copies + graduated copies <= cache.max_bytes, always.
//   - Io modes: the kernel refuses an open whose mode conflicts with the inode's other opens
//     (see the ABI header), so per inode this keeps a count of open files and their mode: an
//     inode stays in the mode of its open files until the last one is released (RELEASE), and
//     only then may change (a file that became local opens in passthrough from then on). The
//     backing id lives while the inode has passthrough opens (a chunk file evicted meanwhile
//     keeps its disk space until then).
//   - Handover (issue 20): backing ids and io modes belong to the kernel's connection, which
//     outlives this daemon. Mode changes are appended to a ledger (<dir>/ledger: "C ino",
//     "P ino id", "E ino"); a successor that adopts the connection reads it and keeps every
//     inode its predecessor left open in that mode for good (passthrough with the same,
//     still registered backing id, whose copy it keeps and charges), since it cannot know
//     when those files are closed. Other copies a predecessor left are deleted (they are
//     not verified in this process; they are assembled again when opened). File handles
//     carry a per-instance nonce, so releases of a predecessor's files are ignored.
//
// Thread-safe. Open/Release/CopyFd are called from FUSE worker threads and never copy a file.
#ifndef LAZYPULL_MOUNT_FUSE_PASSTHROUGH_FILES_H_
#define LAZYPULL_MOUNT_FUSE_PASSTHROUGH_FILES_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/layer_reader.h"

namespace lazypull::mount {

struct PassthroughStats {
  bool enabled = false;  // probe passed; new opens may use passthrough
  uint64_t passthrough_opens = 0;
  uint64_t cached_opens = 0;
  uint64_t backing_files = 0;    // backing ids registered by this instance and still open
  uint64_t assembled_files = 0;  // copies assembled by this instance, ever
  uint64_t copies = 0;           // copies kept now (charged to the chunk cache)
  uint64_t copy_bytes = 0;       // their bytes (holes excluded)
  uint64_t deferred_opens = 0;   // cached opens while their file's copy was being assembled
};

class PassthroughFiles {
 public:
  // `reader` (and its cache) must outlive this. `dir` holds the ledger and assembled files
  // (created; a fresh mount, `adopted` false, starts it empty). Until SetDevice and a
  // successful Probe, every open is a cached one (and counted). Errors: the directory or
  // ledger cannot be made.
  static absl::StatusOr<std::unique_ptr<PassthroughFiles>> Create(LayerReader* reader,
                                                                  std::string dir, bool adopted,
                                                                  std::string name);
  // The connection's /dev/fuse fd (not owned; must stay open while this is used).
  void SetDevice(int dev_fd) { dev_fd_.store(dev_fd); }
  // Stops the copier (a copy in progress is abandoned) and releases the copies' budget
  // charges; the files stay for a successor (handover) unless RemoveAll ran.
  ~PassthroughFiles();
  PassthroughFiles(const PassthroughFiles&) = delete;
  PassthroughFiles& operator=(const PassthroughFiles&) = delete;

  // Registers and unregisters a backing file in `dir` once: the kernel's answer says whether
  // this process may use passthrough here (CAP_SYS_ADMIN, a non-stacked file system). On
  // success new opens may use passthrough; on error they never do (logged by the caller).
  absl::Status Probe();
  // Like a failed probe: no new passthrough opens (config switch, tests).
  void Disable();

  struct Decision {
    bool passthrough = false;
    int32_t backing_id = 0;
    uint64_t fh = 0;  // the open's file handle, for Release
  };
  // The mode of a new read-only open of regular file `ino`.
  Decision Open(format::Ino ino);
  // A RELEASE of an open `Open` answered with `fh` (a predecessor's handles are ignored).
  void Release(format::Ino ino, uint64_t fh);

  // The copy of `ino` when one is complete (for READs of cached opens: the copy is the
  // file's source of truth, its chunks may be gone); null otherwise. Read-only fd.
  std::shared_ptr<const UniqueFd> CopyFd(format::Ino ino);

  PassthroughStats Stats() const;
  // Stops the copier, unregisters every backing id of this instance, deletes `dir` and
  // releases the copies' budget charges (at unmount; not at a handover, whose successor needs
  // the backing ids and `dir`).
  void RemoveAll();
  // Blocks until the copier has nothing queued or running. For tests.
  void WaitCopier();

 private:
  struct Node {
    std::mutex mu;
    int cached = 0;          // open files in cached mode (this instance's)
    int passthrough = 0;     // open files in passthrough mode (this instance's)
    int32_t backing_id = 0;  // while passthrough > 0, or inherited
    bool inherited_cached = false;
    bool inherited_passthrough = false;
    // kFailed: it could not be made (e.g. does not fit the budget); not tried again.
    enum class Copy { kNone, kQueued, kReady, kFailed } copy = Copy::kNone;
    std::shared_ptr<const UniqueFd> copy_fd;  // kReady: <dir>/files/<ino>, verified bytes
    bool charged = false;                     // the copy's bytes are charged to the chunk cache
  };
  PassthroughFiles(LayerReader* reader, std::string dir, std::string name);
  Node& NodeOf(format::Ino ino);
  Node* FindNode(format::Ino ino);  // null if `ino` has none
  // Releases every copy's budget charge (and forgets ready copies when `drop_copies`).
  void ReleaseCharges(bool drop_copies);
  // Bytes a copy of `ino` holds on disk: its chunks' bytes, holes excluded.
  uint64_t CopyBytes(format::Ino ino) const;
  // A backing file for `ino` if it is entirely local and verified and needs no copy, or its
  // copy is ready; -1 otherwise (and a copy is queued when one would do). Caller holds
  // node.mu.
  UniqueFd BackingFd(format::Ino ino, Node& node);
  std::string CopyPath(format::Ino ino) const;
  // Assembles the copy of `ino` (copier thread): reserves its bytes in the cache's budget,
  // writes and renames it, and marks it ready; on failure releases the charge.
  void Assemble(format::Ino ino);
  absl::Status WriteCopy(format::Ino ino, const std::vector<LayerReader::Span>& spans,
                         uint64_t size);
  void CopierLoop();
  // Queues `ino` for the copier; false once it is stopped.
  bool Enqueue(format::Ino ino);
  void StopCopier();
  // Keeps the copies of inodes inherited in passthrough mode (charged) and deletes the rest.
  void AdoptCopies();
  void Append(const std::string& line);
  absl::Status LoadLedger();

  LayerReader* const reader_;
  std::atomic<int> dev_fd_{-1};
  const std::string dir_;
  const std::string name_;  // for logs
  const uint64_t nonce_;
  std::atomic<bool> enabled_{false};
  UniqueFd ledger_;
  std::mutex ledger_mu_;

  mutable std::mutex mu_;  // guards nodes_ (the map; each Node has its own lock) and stats_
  std::unordered_map<format::Ino, std::unique_ptr<Node>> nodes_;
  PassthroughStats stats_;

  // The copier: one thread, started with the first copy, for copies queued by Open.
  std::mutex copier_mu_;
  std::condition_variable copier_cv_;
  std::deque<format::Ino> queue_;  // guarded by copier_mu_
  bool copying_ = false;           // guarded by copier_mu_
  std::atomic<bool> stop_{false};
  std::thread copier_;
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_PASSTHROUGH_FILES_H_
