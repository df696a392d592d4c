// PassthroughFiles: which opens of one FUSE layer mount go to a backing file in the kernel
// (FUSE passthrough, fuse_passthrough_abi.h) and which stay on the daemon's read path.
//
// A regular file opens in passthrough mode when every byte of it is local and verified in the
// chunk cache (LayerReader::LocalFileSpans); otherwise, and when passthrough is unavailable,
// the open is an ordinary cached one and reads reach the daemon as before.
//   - Backing file: a file stored as one chunk is backed by its chunk-cache file (it holds
//     exactly the file's bytes); a larger one by a copy assembled once, in this process, from
//     its verified chunk files (<dir>/files/<ino>, holes left sparse), kept until the layer is
//     unmounted. Nothing read from disk unverified ever backs a file.
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
//     still registered backing id), since it cannot know when those files are closed. File
//     handles carry a per-instance nonce, so releases of a predecessor's files are ignored.
//
// Thread-safe. Open/Release are called from FUSE worker threads; Open may copy a file (once).
#ifndef LAZYPULL_MOUNT_FUSE_PASSTHROUGH_FILES_H_
#define LAZYPULL_MOUNT_FUSE_PASSTHROUGH_FILES_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
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
  uint64_t backing_files = 0;  // backing ids registered by this instance and still open
  uint64_t assembled_files = 0;
  uint64_t assembled_bytes = 0;
};

class PassthroughFiles {
 public:
  // `reader` must outlive this. `dir` holds the ledger and assembled files (created; a fresh
  // mount, `adopted` false, starts it empty). Until SetDevice and a successful Probe, every
  // open is a cached one (and counted). Errors: the directory or ledger cannot be made.
  static absl::StatusOr<std::unique_ptr<PassthroughFiles>> Create(LayerReader* reader,
                                                                  std::string dir, bool adopted,
                                                                  std::string name);
  // The connection's /dev/fuse fd (not owned; must stay open while this is used).
  void SetDevice(int dev_fd) { dev_fd_.store(dev_fd); }
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

  PassthroughStats Stats() const;
  // Unregisters every backing id of this instance and deletes `dir` (at unmount; not at a
  // handover, whose successor needs both).
  void RemoveAll();

 private:
  struct Node {
    std::mutex mu;
    int cached = 0;          // open files in cached mode (this instance's)
    int passthrough = 0;     // open files in passthrough mode (this instance's)
    int32_t backing_id = 0;  // while passthrough > 0, or inherited
    bool inherited_cached = false;
    bool inherited_passthrough = false;
    bool assembled = false;  // <dir>/files/<ino> holds the file's verified bytes
  };
  PassthroughFiles(LayerReader* reader, std::string dir, std::string name);
  Node& NodeOf(format::Ino ino);
  // A backing file for `ino` if it is entirely local and verified; -1 otherwise.
  UniqueFd BackingFd(format::Ino ino, Node& node);
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
};

}  // namespace lazypull::mount

#endif  // LAZYPULL_MOUNT_FUSE_PASSTHROUGH_FILES_H_
