// LayerReader: the bytes of the files of one lazy layer, fetched on demand.
//
// A read maps to the LayerIndex chunks covering it. Each chunk is served from the ChunkCache
// (content-addressed by the chunk's digest) or, on a miss, fetched: adjacent missing chunks
// are merged into ONE range request to the BlobReader, each chunk is decompressed (gzip
// member at its inner offset, zstd frame, or zeros without any request), verified against
// its digest, stored in the cache and copied out. Bytes that do not verify are never served
// nor cached.
//
// Single-flight: while a chunk is being fetched (by a read, the prefetch or the background
// fetch) other reads of it wait for that fetch instead of starting another. Waiting is
// bounded by LayerReaderOptions::fetch_timeout, so a stalled registry turns into
// DeadlineExceeded (EIO at the FUSE layer) instead of a hung reader; the fetch itself keeps
// running and its result is still cached.
//
// Prefetch and background fetch (StartBackground): first the eStargz prioritized range
// (LayerIndex::prefetch_range()) in one request, then every remaining chunk of data_range()
// at bounded concurrency and bandwidth, so the layer becomes fully local.
//
// Chunks built without a digest (IndexBuildOptions::allow_missing_digests) cannot be
// content-addressed: they are fetched on every read and never cached.
//
// Thread-safety: all methods are thread-safe. Destruction stops the background fetch and
// waits for this reader's fetches in flight (i.e. for their BlobReader calls to return).
#ifndef LAZYPULL_FETCHER_LAYER_READER_LAYER_READER_H_
#define LAZYPULL_FETCHER_LAYER_READER_LAYER_READER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/fetch_executor.h"
#include "lazypull/blob_reader.h"
#include "nlohmann/json.hpp"

namespace lazypull {

struct LayerReaderOptions {
  // Longest a read waits for chunks being fetched before failing with DeadlineExceeded.
  std::chrono::milliseconds fetch_timeout{30000};
  // Missing chunks whose compressed ranges are at most this far apart are fetched in one
  // request (the gap is fetched and discarded).
  uint64_t max_merge_gap = 64 << 10;
  // Upper bound of one merged request (a single chunk larger than this is still fetched).
  uint64_t max_request_bytes = 16 << 20;
  // On a miss, also fetch (in the same request, without waiting for them) the following
  // chunks of the same file that are not local, up to this many uncompressed bytes:
  // sequential readers then cost one request per readahead window, not one per chunk.
  uint64_t readahead_bytes = 4 << 20;
  // Threads of the reader's own FetchExecutor (when `executor` is null): foreground fetches
  // always have this many threads besides the background ones.
  size_t foreground_threads = 4;
  // Shared executor; null = the reader creates its own with foreground_threads +
  // background_concurrency threads.
  std::shared_ptr<FetchExecutor> executor;

  // Fetch LayerIndex::prefetch_range() in one request when StartBackground() is called.
  bool prefetch = true;
  // Fetch the whole layer in the background after the prefetch.
  bool background_fetch = true;
  // Background requests in flight at once (>= 1).
  size_t background_concurrency = 2;
  // Bytes per background request (whole chunks; a larger chunk is fetched alone).
  uint64_t background_request_bytes = 4 << 20;
  // Background bandwidth cap in compressed bytes per second; 0 = unlimited.
  uint64_t background_bandwidth = 0;
};

// Counters and progress of one layer. Value type.
struct LayerReaderStats {
  std::string layer_id;
  uint64_t bytes_fetched = 0;   // compressed bytes read from the blob
  uint64_t requests = 0;        // range requests issued
  uint64_t chunks_fetched = 0;  // chunks decoded and verified after a fetch
  uint64_t cache_hits = 0;      // chunk reads served by the cache
  uint64_t cache_misses = 0;    // chunk reads that had to fetch (or wait for a fetch)
  uint64_t fetch_waits = 0;     // misses that joined a fetch already in flight
  uint64_t fetch_errors = 0;    // failed range requests
  uint64_t verify_errors = 0;   // chunks that did not decompress or verify
  uint64_t timeouts = 0;        // reads that gave up waiting (fetch_timeout)
  uint64_t local_bytes = 0;     // uncompressed bytes of chunks known to be local
  uint64_t total_bytes = 0;     // uncompressed bytes of all file chunks
  uint64_t local_chunks = 0;
  uint64_t total_chunks = 0;
  std::string prefetch;    // "off", "pending", "none", "running", "done", "failed"
  std::string background;  // "off", "pending", "running", "done", "failed", "stopped"
  double fetched_percent() const {
    return total_bytes == 0 ? 100.0 : 100.0 * static_cast<double>(local_bytes) / total_bytes;
  }
  // {"layer": ..., "bytes_fetched": ..., "fetched_percent": ..., "cache_hits": ..., ...}
  nlohmann::json ToJson() const;
};

class LayerReader {
 public:
  // `index`, `blob` and `cache` must be non-null; `cache` must outlive the reader. Scans the
  // cache for chunks already local (for fetched %). InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<LayerReader>> Create(
      std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
      std::shared_ptr<BlobReader> blob, ChunkCache* cache, LayerReaderOptions options);

  ~LayerReader();
  LayerReader(const LayerReader&) = delete;
  LayerReader& operator=(const LayerReader&) = delete;

  // Copies bytes [offset, offset + length) of regular file `ino` into `buf` and returns how
  // many were copied (fewer only at EOF; 0 at or past EOF). InvalidArgument if `ino` is not a
  // regular file; DataLoss if a chunk does not decompress or verify; DeadlineExceeded after
  // fetch_timeout; BlobReader errors keep their code. Every error is logged once as a JSON
  // line naming the layer, the file and the chunk, and the message says the same.
  absl::StatusOr<size_t> Read(format::Ino ino, uint64_t offset, char* buf, size_t length);

  // Fetches the prefetch range now, on the calling thread, in one request (no-op without
  // one). Errors as Read.
  absl::Status Prefetch();

  // Starts (once) the prefetch and the background fetch on a thread of this reader, as
  // configured. Returns immediately.
  void StartBackground();

  // Blocks until the background work started by StartBackground() has finished (or
  // `timeout` passed). Returns whether it finished. For tests and orderly shutdown.
  bool WaitBackground(std::chrono::milliseconds timeout);

  const std::string& layer_id() const { return layer_id_; }
  const format::LayerIndex& index() const { return *index_; }
  LayerReaderStats Stats() const;

 private:
  // A chunk fetch in flight (or just completed). Guarded by mu_.
  struct Flight {
    bool done = false;
    absl::Status status;
    std::shared_ptr<const std::string> data;  // the verified chunk bytes
  };
  struct ChunkRef {
    const format::Chunk* chunk;
    std::shared_ptr<Flight> flight;
  };
  struct Group {
    ByteRange range;
    std::vector<ChunkRef> chunks;
  };

  LayerReader(std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
              std::shared_ptr<BlobReader> blob, ChunkCache* cache, LayerReaderOptions options);

  // Uncompressed bytes and occurrences of one distinct chunk in the layer.
  struct Weight {
    uint64_t bytes = 0;
    uint64_t chunks = 0;
  };

  // Raw digest bytes, or the chunk's location when it has no digest.
  static std::string KeyOf(const format::Chunk& c);
  // Records a chunk as stored in the cache / as evicted (for fetched %). Caller holds mu_.
  void MarkLocalLocked(const std::string& key);
  void ForgetLocalLocked(const format::Chunk& c);
  // Claims `c` for fetching: returns a new flight registered in flights_ (and sets *owned),
  // or the flight already in progress. Returns null if the chunk became local meanwhile.
  std::shared_ptr<Flight> ClaimLocked(const format::Chunk& c, bool* owned);
  // Splits chunks (sorted by compressed offset) into merged requests.
  std::vector<Group> MergeIntoGroups(std::vector<ChunkRef> chunks, uint64_t max_bytes) const;
  // Runs one request, decodes/verifies/stores every chunk and completes their flights.
  void RunGroup(const Group& group);
  void CompleteFlight(const format::Chunk& c, const std::shared_ptr<Flight>& flight,
                      absl::Status status, std::shared_ptr<const std::string> data, bool stored);
  // Runs `group` on the executor and counts it as outstanding.
  void SubmitGroup(Group group, FetchExecutor::Priority priority);
  // Waits for `flight` until `deadline`. DeadlineExceeded on timeout.
  absl::Status WaitFlight(const std::shared_ptr<Flight>& flight,
                          std::chrono::steady_clock::time_point deadline);
  absl::Status ChunkError(const format::Chunk& c, format::Ino ino, const absl::Status& st,
                          std::string_view what);
  void BackgroundMain();
  void RunBackgroundFetch();

  const std::string layer_id_;
  const std::shared_ptr<const format::LayerIndex> index_;
  const std::shared_ptr<BlobReader> blob_;
  ChunkCache* const cache_;
  const LayerReaderOptions options_;
  std::shared_ptr<FetchExecutor> executor_;
  // Every chunk of the layer sorted by compressed offset (the background fetch order).
  std::vector<const format::Chunk*> all_chunks_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // flights done, outstanding_ changes, stop
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_;
  absl::flat_hash_map<std::string, Weight> weights_;  // by key; immutable after construction
  absl::flat_hash_set<std::string> local_;            // keys of chunks known to be in the cache
  size_t outstanding_ = 0;                            // submitted groups not yet finished
  size_t background_in_flight_ = 0;
  bool stopping_ = false;
  bool background_started_ = false;
  bool background_finished_ = false;
  std::thread background_thread_;
  LayerReaderStats stats_;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_LAYER_READER_H_
