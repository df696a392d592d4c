// ChunkCache: verified, content-addressed, size-bounded on-disk cache of layer chunks.
//
// A chunk is stored under the sha256 digest of its UNCOMPRESSED bytes, so equal chunks of
// different layers or images are stored once. On disk, under CacheConfig::dir:
//
//   lock                      flock'ed while a ChunkCache owns the directory
//   chunks/<hex[0:2]>/<hex>   one file per chunk, mode 0400, its mtime is the LRU stamp
//
// Every directory of the cache is 0700 (enforced at Open, also on directories that existed)
// and every chunk 0400: chunks are private image data, unreadable by other users even when
// the cache dir lives outside the daemon's (0700) root.
//   tmp/<hex>.<n>             chunks being written; removed when the cache is opened
//
// Integrity ("no unverified byte is served"):
//   * Put: bytes are hashed in memory and must match the digest before anything is written;
//     a mismatch is DataLoss and nothing is stored. PutVerified and AdoptVerified take bytes
//     the caller has verified itself.
//   * Atomicity: a chunk is written to tmp/ and renamed into chunks/, so a crash (even
//     SIGKILL mid-write) never leaves a partial chunk under its final name; Open() deletes
//     whatever tmp/ holds. There is no fsync: after a power loss a renamed file may hold
//     anything, but every file found by Open() is re-verified before it is served (below), so
//     durability would only save a refetch, and readers must not wait for the disk.
//   * Disk: files found by Open() (left by an earlier process) are untrusted. The first read
//     of such a file in this process hashes the whole file before any byte is served; a
//     mismatch deletes the file (DataLoss for Read: the caller fetches the chunk again).
//     Files written by this process are trusted because their bytes were verified.
//     Short reads of a verified file (truncated behind our back) are also DataLoss and drop
//     the entry. The remaining hole is a same-size in-place rewrite of a verified file by
//     another root process while we run; files are 0400 in a 0700 directory to make that a
//     deliberate act, outside the threat model (as for containerd's content store).
//
// Budget: max_bytes covers everything lazypull keeps on disk for lazy layers. Besides chunks,
// owners register bytes they keep elsewhere in keyed external accounts (graduated layer
// copies; one account per FUSE passthrough copy, mount/fuse/passthrough_files.h), and chunks
// are evicted so that chunk bytes + the sum of the accounts stay <= max_bytes. A copy made
// from chunks makes those chunks redundant while it lives: MakeColdest puts them first in
// line for eviction, so the budget sheds the duplicate bytes before any other chunk.
//
// LRU: total bytes stay <= max_bytes by evicting least recently used chunks. Order survives
// restarts via each file's mtime (set to a strictly increasing stamp when stored, refreshed
// on a hit at most once per lru_persist_interval, so hits cost no extra syscall).
//
// Fetching is the caller's (LayerReader shares one fetch among concurrent readers of a chunk
// and stores it with PutVerified or AdoptVerified); the cache never blocks on a fetch.
//
// Hot path: a hit is a hash lookup under a mutex plus one pread on a cached open fd (a
// bounded LRU of fds, CacheConfig::max_open_files).
//
// Thread-safety: all methods are thread-safe.
#ifndef LAZYPULL_FETCHER_CACHE_CHUNK_CACHE_H_
#define LAZYPULL_FETCHER_CACHE_CHUNK_CACHE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "fetcher/cache/cache_config.h"
#include "fetcher/cache/cache_fs.h"
#include "fetcher/cache/temp_chunk.h"
#include "lazypull/digest.h"

namespace lazypull {

// Counters since Open() (entries/bytes_stored/open_fds are current values).
struct ChunkCacheStats {
  uint64_t hits = 0;               // reads served from disk
  uint64_t misses = 0;             // reads that found no stored chunk
  uint64_t entries = 0;            // chunks stored now
  uint64_t bytes_stored = 0;       // bytes of the chunks stored now
  uint64_t bytes_written = 0;      // bytes ever written into the cache by this process
  uint64_t evictions = 0;          // chunks evicted by the size limit
  uint64_t corrupt_removed = 0;    // files dropped because their bytes did not verify
  uint64_t store_errors = 0;       // verified chunks that could not be stored (e.g. ENOSPC)
  uint64_t open_fds = 0;           // chunk fds held by the fd cache now
  uint64_t external_bytes = 0;     // bytes kept outside the cache that count against max_bytes
  uint64_t external_accounts = 0;  // open external accounts (keys with bytes > 0)
};

// An open chunk file; its path is kept so a hit allocates nothing.
struct OpenChunkFile {
  UniqueFd fd;
  std::string path;
};

class ChunkCache {
 public:
  // Opens the cache at config.dir (created if missing): takes the directory lock, deletes
  // temp leftovers, scans stored chunks (untrusted until first read) and rebuilds the LRU
  // order from their mtimes, then evicts down to max_bytes. InvalidArgument if config.dir
  // is empty; FailedPrecondition if another ChunkCache (in any process) owns the directory;
  // file-system errors otherwise. `fs` defaults to the real POSIX file system.
  static absl::StatusOr<std::unique_ptr<ChunkCache>> Open(const CacheConfig& config,
                                                          std::shared_ptr<CacheFs> fs = nullptr);

  ~ChunkCache();
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  // Copies bytes [offset, offset + length) of a stored chunk into `buf` and returns how many
  // were copied (fewer than `length` only at the end of the chunk). NotFound if the chunk is
  // not stored; OutOfRange if offset > chunk size; DataLoss if the file on disk does not
  // verify (the file is deleted).
  absl::StatusOr<size_t> Read(const Digest& digest, uint64_t offset, char* buf, size_t length);

  // Verifies `data` against `digest` and stores it. OK without writing if the chunk is
  // already stored (equal chunks are stored once). DataLoss on mismatch; ResourceExhausted
  // on ENOSPC/EDQUOT or when the chunk alone exceeds max_bytes; other I/O errors keep their
  // errno-derived code. On any error no entry is visible; errors other than DataLoss are
  // counted (store_errors).
  absl::Status Put(const Digest& digest, std::string_view data);
  // Put for bytes the caller has just verified against `digest` (e.g. to serve them before
  // storing them): skips hashing them again. Same errors, except DataLoss.
  absl::Status PutVerified(const Digest& digest, std::string_view data);

  // A chunk written into the cache's tmp/ as it streams in, for chunks too large to hold in
  // memory (see TempChunk). InvalidArgument for a chunk larger than max_bytes is NOT an
  // error here: such a chunk can be streamed and served, just not adopted.
  absl::StatusOr<std::unique_ptr<TempChunk>> CreateTempChunk(const Digest& digest);
  // Publishes a temp chunk whose bytes the caller has verified against `digest`: renames it
  // into chunks/ and indexes it (trusted, like PutVerified). OK without change if the chunk
  // is already stored. ResourceExhausted when the chunk alone exceeds max_bytes (the temp
  // file stays the caller's). The temp chunk's fd stays readable either way. Errors are
  // counted (store_errors).
  absl::Status AdoptVerified(const Digest& digest, TempChunk& temp);

  // A stored chunk's file, open for reading, for zero-copy replies (splice). The handle keeps
  // the file open even if the chunk is evicted meanwhile: chunk files are never rewritten in
  // place, so its bytes stay the verified ones. Copyable; thread-safe.
  class ReadHandle {
   public:
    int fd() const { return file_->fd.get(); }
    uint64_t size() const { return size_; }

   private:
    friend class ChunkCache;
    std::shared_ptr<const OpenChunkFile> file_;
    uint64_t size_ = 0;
  };
  // The file of a stored chunk that this process has verified (written it, or hashed it since
  // Open). NotFound if not stored; FailedPrecondition if stored but not verified yet (Read
  // verifies it on first use); file-system errors opening it. Touches the LRU like a hit.
  absl::StatusOr<ReadHandle> OpenVerified(const Digest& digest);

  // Told about every chunk that leaves the cache (evicted by the size limit, or dropped
  // because its file vanished or did not verify), so users that count chunks as local stay
  // truthful. Called after the cache's own lock is released, from the thread whose call
  // removed the chunk; must not call back into the cache's listener registration.
  class EvictionListener {
   public:
    virtual ~EvictionListener() = default;
    virtual void OnChunkRemoved(const Digest& digest) = 0;
  };
  // `listener` must stay valid until RemoveListener(listener) returns; RemoveListener waits
  // for calls to it in progress.
  void AddListener(EvictionListener* listener);
  void RemoveListener(EvictionListener* listener);

  // Deletes a stored chunk now (e.g. one a graduated layer's local copy now holds); listeners
  // are told as for an eviction. No-op if it is not stored. Readers holding its fd keep it.
  void Remove(const Digest& digest);

  // External account `key`: bytes kept on disk outside the cache that count against
  // max_bytes. Replaces the account's previous value (0 closes it) and evicts chunks down to
  // max_bytes - (sum of all accounts) at once (listeners are told). Accounts may exceed
  // max_bytes together; then every chunk is evicted.
  void SetExternalBytes(const std::string& key, uint64_t bytes);
  // The owner's graduated layer copies: the account "".
  void SetExternalBytes(uint64_t bytes) { SetExternalBytes(std::string(), bytes); }
  // Sets account `key` to `bytes` only if all accounts then fit max_bytes (evicting chunks
  // as needed, like SetExternalBytes). ResourceExhausted, account unchanged, otherwise: for
  // copies that may be made only if they fit, before the caller writes them.
  absl::Status ReserveExternalBytes(const std::string& key, uint64_t bytes);
  // The bytes of account `key` (0 if closed).
  uint64_t ExternalBytes(const std::string& key) const;

  // Moves a stored chunk to the cold end of the LRU order (next to be evicted), e.g. once a
  // copy holds its bytes. A later hit moves it back. In memory only: after a restart the
  // order comes from the files' mtimes again. No-op if it is not stored.
  void MakeColdest(const Digest& digest);

  // Whether the chunk is stored (not whether it would verify).
  bool Contains(const Digest& digest) const;

  ChunkCacheStats stats() const;
  const CacheConfig& config() const { return config_; }
  // The final path of a chunk's file (whether or not it exists). For tests and operators.
  std::string ChunkPath(const Digest& digest) const;

 private:
  struct Entry;
  using OpenChunk = OpenChunkFile;
  using FdList = std::vector<std::shared_ptr<const OpenChunk>>;
  using LruList = std::list<Entry*>;

  ChunkCache(CacheConfig config, std::shared_ptr<CacheFs> fs, UniqueFd lock);
  absl::Status Load();

  // Serves a hit. NotFound if not stored (or the file vanished); DataLoss if it does not
  // verify (entry and file removed).
  absl::StatusOr<size_t> ReadStored(const std::string& hex, uint64_t offset, char* buf,
                                    size_t length);
  // Writes a verified chunk to disk and indexes it; evicts to the limit.
  absl::Status Store(const std::string& hex, std::string_view data);
  // Counts a failed store (store_errors) and tells listeners about evictions; returns `s`.
  absl::Status FinishStore(absl::Status s);

  // Tells listeners about the chunks erased since the last call. Call without mu_.
  void NotifyRemoved();
  // Removes `entry` from the index; caller holds mu_. The fd (if any) is moved to `closing`
  // so it is closed after the lock is released.
  void EraseLocked(Entry* entry, FdList* closing);
  void EvictLocked(const Entry* keep, FdList* closing);
  void SetExternalLocked(const std::string& key, uint64_t bytes);
  void CacheFdLocked(Entry* entry, std::shared_ptr<const OpenChunk> file, FdList* closing);
  // Drops the entry for `hex` if it is still the one with `id` and deletes its file.
  void DropIfSame(const std::string& hex, uint64_t id, bool corrupt);
  // Its work, without telling listeners (for callers that tell them later).
  void DropIfSameQuietly(const std::string& hex, uint64_t id, bool corrupt);
  // AdoptVerified's work, without telling listeners.
  absl::Status AdoptQuietly(const Digest& digest, TempChunk& temp);
  int64_t NextStampLocked();
  std::string ShardDir(const std::string& hex) const;
  std::string PathOf(const std::string& hex) const;

  const CacheConfig config_;
  const std::shared_ptr<CacheFs> fs_;
  const UniqueFd lock_fd_;
  const std::string chunks_dir_;
  const std::string tmp_dir_;
  std::atomic<uint64_t> tmp_counter_{0};

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // by hex digest; node-stable
  LruList lru_;                                     // front = most recently used
  LruList fd_lru_;                    // entries holding an open fd; front = most recently used
  std::vector<std::string> removed_;  // hex digests erased, not yet told to listeners
  // Listeners; held while telling them, so RemoveListener waits for calls in progress.
  std::mutex listeners_mu_;
  std::vector<EvictionListener*> listeners_;
  uint64_t bytes_stored_ = 0;
  std::unordered_map<std::string, uint64_t> external_;  // account -> bytes (never 0)
  uint64_t external_bytes_ = 0;                         // their sum
  uint64_t next_entry_id_ = 1;
  int64_t last_stamp_ = 0;
  ChunkCacheStats counters_;  // entries/bytes_stored/open_fds are filled in by stats()
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_CACHE_CHUNK_CACHE_H_
