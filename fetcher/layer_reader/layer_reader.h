// LayerReader: the bytes of the files of one lazy layer, fetched on demand.
//
// A read maps to the LayerIndex chunks covering it. Each chunk is served from the ChunkCache
// (content-addressed by the chunk's digest) or, on a miss, fetched: the missing chunks of the
// read, plus readahead (below), go out as ONE streamed fetch (BlobReader::StreamRanges: close
// chunks merged into one range, separate ranges in one multi-range request where the registry
// supports it). As each chunk's compressed bytes arrive it is decompressed (gzip member at its
// inner offset, zstd frame, or zeros without any request), verified against its digest,
// stored in the cache and handed to its waiters, before the rest of the fetch has arrived.
// Bytes that do not verify are never served nor cached.
//
// Readahead, because images store files in directory order and programs read neighbours
// together:
//   * same file: a miss also fetches the file's following chunks, up to readahead_bytes;
//   * across files: a miss also fetches the chunks that follow in BLOB order, up to a window
//     of compressed bytes that adapts per layer: it starts at readahead_window, doubles (up to
//     readahead_window_max) when the program reads half of the previous window's chunks — and
//     that read fetches the next window before the program misses — and halves (down to
//     readahead_window_min) when a new miss finds that less than a quarter of the previous
//     window was read;
//   * same directory: a miss on a small file read from its start also fetches the directory's
//     other small files that are not local, nearest in name order first, up to a budget of
//     about two bandwidth-delay products that adapts to how many of them get read
//     (DirectoryBatcher): programs read a directory's files together in an order the blob does
//     not predict (module imports, locales).
//
// Single-flight: while a chunk is being fetched (by a read, readahead, the prefetch or the
// background fetch) other reads of it wait for that fetch instead of starting another. Waiting
// is bounded by LayerReaderOptions::fetch_timeout, so a stalled registry turns into
// DeadlineExceeded (EIO at the FUSE layer) instead of a hung reader; the fetch itself keeps
// running and its result is still cached.
//
// Prefetch and background fetch (StartBackground): first the eStargz prioritized range
// (LayerIndex::prefetch_range()) in one request, at once, as on-demand work; then, once the
// layer has seen no on-demand fetch for background_silence, every remaining chunk in blob
// order, in requests of background_request_bytes, each one admitted by the node-wide
// BackgroundScheduler (paused while any on-demand fetch is in progress, paced by a bandwidth
// budget), so the layer becomes fully local without slowing containers' reads.
//
// SOCI layers (ChunkCompression::kGzipSpan): the unit of fetch, verification, caching and
// single flight is the span, shared by the chunks of every file in it: a span's compressed
// bytes are checked against its digest before they are inflated, the cache stores the
// compressed span, and the reader keeps the last few inflated spans (InflatedSpans), so
// neighbouring files inflate a span once. Their reads are never zero-copy (ReadSpans).
//
// Chunks built without a digest (IndexBuildOptions::allow_missing_digests) cannot be
// content-addressed: they are fetched on every read and never cached.
//
// Thread-safety: all methods are thread-safe. Destruction stops the background fetch, cancels
// the blob reader (BlobReader::Cancel: transfers in progress end within about a second) and
// waits for this reader's fetches in flight to return.
#ifndef LAZYPULL_FETCHER_LAYER_READER_LAYER_READER_H_
#define LAZYPULL_FETCHER_LAYER_READER_LAYER_READER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/layer_reader/background_scheduler.h"
#include "fetcher/layer_reader/chunk_spool.h"
#include "fetcher/layer_reader/directory_batcher.h"
#include "fetcher/layer_reader/fetch_executor.h"
#include "fetcher/layer_reader/file_start_observer.h"
#include "fetcher/layer_reader/inflated_spans.h"
#include "lazypull/blob_reader.h"
#include "nlohmann/json.hpp"

namespace lazypull {

struct LayerReaderOptions {
  // Longest a read waits for chunks being fetched before failing with DeadlineExceeded.
  std::chrono::milliseconds fetch_timeout{30000};
  // Missing chunks whose compressed ranges are at most this far apart are fetched as one range
  // (the gap is fetched and discarded); farther ones become separate ranges of the same fetch.
  uint64_t max_merge_gap = 16 << 10;
  // Upper bound of one on-demand fetch, readahead included (a single larger chunk is still
  // fetched).
  uint64_t max_request_bytes = 16 << 20;
  // Chunks larger than this (compressed, or decompressed counting the member's bytes before
  // the chunk: inner_offset) never sit in memory whole: they are decompressed and hashed as
  // they stream in, into a file (ChunkSpool), and served from it once verified. Bounds the
  // memory of a read whatever a TOC declares.
  uint64_t max_chunk_in_memory = 8 << 20;
  // Same-file readahead: on a miss of a file read sequentially (the miss continues where the
  // file's previous miss ended), also fetch the file's following chunks that are not local,
  // up to this many uncompressed bytes (sequential readers then cost one round trip per
  // readahead window, not one per chunk). 0 = off.
  uint64_t readahead_bytes = 4 << 20;
  // Cross-file readahead window in compressed bytes (see the file comment): initial size,
  // bounds. readahead_window = 0 turns it off.
  uint64_t readahead_window = 256 << 10;
  uint64_t readahead_window_min = 32 << 10;
  uint64_t readahead_window_max = 4 << 20;
  // Directory batches (directory_batcher.h): a cold miss on a small file also fetches the
  // directory's other small files, up to an adaptive budget. small_file = 0 turns them off.
  DirectoryBatchOptions directory_batch;
  // Threads of the reader's own FetchExecutor (when `executor` is null): foreground fetches
  // always have this many threads besides the background ones.
  size_t foreground_threads = 8;
  // Shared executor; null = the reader creates its own.
  std::shared_ptr<FetchExecutor> executor;
  // Where this layer's bytes come from (e.g. the registry host): the executor limits how many
  // of its threads one source may hold, so a stalled registry cannot starve the others.
  std::string fetch_source;

  // Fetch LayerIndex::prefetch_range() in one request when StartBackground() is called.
  bool prefetch = true;
  // Fetch the whole layer in the background after the prefetch.
  bool background_fetch = true;
  // The background fetch of a layer starts only after the layer saw no on-demand fetch for
  // this long.
  std::chrono::milliseconds background_silence{2000};
  // Compressed bytes per background request (whole chunks; a larger chunk is fetched alone).
  // Small, so an on-demand read never waits long behind one.
  uint64_t background_request_bytes = 512 << 10;
  // Node-wide admission of background requests; null = the reader creates its own from
  // `background_policy`.
  std::shared_ptr<BackgroundScheduler> scheduler;
  BackgroundSchedulerOptions background_policy;
  // Told about every read from the start of a regular file (startup prefetch). Null = none.
  std::shared_ptr<FileStartObserver> file_start_observer;
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
  uint64_t bytes_read = 0;        // file bytes returned by Read (what programs read)
  uint64_t readahead_chunks = 0;  // chunks fetched by cross-file readahead
  uint64_t readahead_used = 0;    // of those, chunks a later read asked for
  uint64_t readahead_window = 0;  // current cross-file window, compressed bytes
  uint64_t background_bytes = 0;  // compressed bytes fetched by the background fetch
  uint64_t batch_chunks = 0;      // chunks fetched by directory batches
  uint64_t batch_used = 0;        // of those, chunks a later read asked for
  uint64_t batch_budget = 0;      // current directory batch budget, compressed bytes
  uint64_t ahead_chunks = 0;      // chunks fetched by FetchAhead (startup prefetch)
  uint64_t ahead_used = 0;        // of those, chunks a later read asked for
  // Fetches a read started for its own miss: round trips no prefetch, readahead or batch
  // foresaw. In a single-threaded program start every one of them waited for the one before,
  // so their sum over the image's layers is the start's serial depth.
  uint64_t demand_fetches = 0;
  std::string prefetch;  // "off", "pending", "none", "running", "done", "failed"
  // "off"; "pending" (not started); "waiting" (silence period: the layer is being read);
  // "paused" (yielding to on-demand fetches); "throttled" (bandwidth budget); "queued" (node-
  // wide background concurrency); "mirror_filling" (the blob's mirror is copying it from the
  // registry: BlobReader::BulkReadsReadyAt); "running"; "done"; "failed" (fetch errors left chunks
  // missing); "incomplete" (the chunk cache evicted chunks and cannot hold the whole
  // layer); "stopped".
  std::string background;
  double fetched_percent() const {
    return total_bytes == 0 ? 100.0 : 100.0 * static_cast<double>(local_bytes) / total_bytes;
  }
  // {"layer": ..., "bytes_fetched": ..., "fetched_percent": ..., "cache_hits": ..., ...}
  nlohmann::json ToJson() const;
};

class LayerReader : private ChunkCache::EvictionListener {
 public:
  // `index`, `blob` and `cache` must be non-null; `cache` must outlive the reader. Scans the
  // cache for chunks already local (for fetched %). InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<LayerReader>> Create(
      std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
      std::shared_ptr<BlobReader> blob, ChunkCache* cache, LayerReaderOptions options);

  ~LayerReader() override;
  LayerReader(const LayerReader&) = delete;
  LayerReader& operator=(const LayerReader&) = delete;

  // Copies bytes [offset, offset + length) of regular file `ino` into `buf` and returns how
  // many were copied (fewer only at EOF; 0 at or past EOF). InvalidArgument if `ino` is not a
  // regular file; DataLoss if a chunk does not decompress or verify; DeadlineExceeded after
  // fetch_timeout; BlobReader errors keep their code. Every error is logged once as a JSON
  // line naming the layer, the file and the chunk, and the message says the same.
  absl::StatusOr<size_t> Read(format::Ino ino, uint64_t offset, char* buf, size_t length);

  // A piece of a file's bytes for a zero-copy reply: `length` bytes at `offset` of a verified
  // chunk-cache file, or (no file) `length` zero bytes of a hole.
  struct Span {
    std::optional<ChunkCache::ReadHandle> file;
    uint64_t offset = 0;
    size_t length = 0;
  };
  // When EVERY byte of [offset, offset + length) of regular file `ino` (clamped at EOF) is in
  // the chunk cache as a file this process has verified, or in a hole, fills `spans` with them
  // in order and returns true; the handles keep the files open while the caller splices them.
  // Otherwise returns false without side effects beyond LRU touches, and the caller uses Read.
  bool ReadSpans(format::Ino ino, uint64_t offset, size_t length, std::vector<Span>* spans);
  // The same for the whole of `ino`, with no side effect but LRU touches (no read statistics,
  // readahead or file-start observers): for FUSE passthrough, which asks at open whether a
  // file is entirely local and verified.
  bool LocalFileSpans(format::Ino ino, std::vector<Span>* spans);

  // Fetches the prefetch range now, on the calling thread, in one request (no-op without
  // one). Errors as Read.
  absl::Status Prefetch();

  // Bytes [offset, offset + length) of regular file `ino`.
  struct FileExtent {
    format::Ino ino = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  // Starts fetching, at foreground priority and without waiting, the chunks of `extents` that
  // are neither local nor being fetched, as one fetch (blob order; each chunk is handed to
  // its readers as soon as it arrived and verified). Reads of those chunks join that fetch.
  // For startup prefetch, which knows what a program will read before it does. Extents of
  // non-regular files are ignored. Returns how many chunks it started fetching (0 once
  // stopped, or when all are local or in flight). Errors of the fetch reach the reads that
  // wait for it.
  size_t FetchAhead(std::span<const FileExtent> extents);

  // Starts (once) the prefetch and the background fetch on a thread of this reader, as
  // configured. Returns immediately.
  void StartBackground();

  // Stops the reader for good: background fetch ends, fetches in flight are cancelled
  // (BlobReader::Cancel) and reads waiting for them fail with Cancelled; later reads of
  // uncached bytes fail too. For unmounting without waiting out a stalled registry.
  // Idempotent; the destructor calls it.
  void Stop();

  // Blocks until the background work started by StartBackground() has finished (or
  // `timeout` passed). Returns whether it finished. For tests and orderly shutdown.
  bool WaitBackground(std::chrono::milliseconds timeout);

  const std::string& layer_id() const { return layer_id_; }
  const format::LayerIndex& index() const { return *index_; }
  // The chunk cache the reader stores into (outlives the reader).
  ChunkCache* cache() const { return cache_; }
  LayerReaderStats Stats() const;

 private:
  // A chunk fetch in flight (or just completed). Guarded by mu_.
  struct Flight {
    bool done = false;
    absl::Status status;
    std::shared_ptr<const std::string> data;  // the verified chunk bytes, or
    std::shared_ptr<const TempChunk> file;    // for a spooled chunk: a file holding them
    bool refetched = false;  // fetched again after failing verification (RefetchElsewhere)
  };
  struct ChunkRef {
    const format::Chunk* chunk;
    std::shared_ptr<Flight> flight;
  };
  struct Group {
    ByteRange range;
    std::vector<ChunkRef> chunks;  // sorted by compressed offset
  };
  enum class FetchKind { kOnDemand, kReadahead, kPrefetch, kBackground, kAhead };

  LayerReader(std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
              std::shared_ptr<BlobReader> blob, ChunkCache* cache, LayerReaderOptions options);

  // Read without telling the file_start_observer.
  absl::StatusOr<size_t> ReadChunks(format::Ino ino, uint64_t offset, char* buf, size_t length);
  // readahead_keys_ id of the chunks FetchAhead claimed (window ids count up from 1; batch ids
  // carry DirectoryBatcher::kBatchIdBit).
  static constexpr uint64_t kAheadId = uint64_t{1} << 62;

  // Uncompressed bytes and occurrences of one distinct chunk in the layer.
  struct Weight {
    uint64_t bytes = 0;
    uint64_t chunks = 0;
  };

  // What identifies a chunk's content for single-flight, the local set and readahead: its
  // digest AND length (DigestKey), or its location when it has no digest. Never the digest
  // alone: a waiter must only ever join a fetch of exactly the bytes it asked for.
  static std::string KeyOf(const format::Chunk& c);
  static std::string DigestKey(std::string_view raw_digest, uint64_t length);
  // Blob order: by member/frame, then by position inside it.
  static bool BlobOrderLess(const format::Chunk* a, const format::Chunk* b);
  // Records a chunk as stored in the cache / as evicted (for fetched %). Caller holds mu_.
  void MarkLocalLocked(const std::string& key);
  void ForgetLocalLocked(const format::Chunk& c);
  void ForgetLocalKeyLocked(const std::string& key);
  // ChunkCache::EvictionListener: a chunk this layer counted as local left the cache.
  void OnChunkRemoved(const Digest& digest) override;
  // One pass of the background fetch over every chunk not local. False if stopped.
  bool BackgroundPass();
  // Waits while the blob asks bulk reads to wait (BlobReader::BulkReadsReadyAt: its mirror is
  // filling itself). False if stopped.
  bool WaitBulkReady();
  // Claims `c` for fetching: returns a new flight registered in flights_ (and sets *owned),
  // or the flight in progress (or done with the verified bytes, until stored); a flight that
  // failed is replaced. Returns null if the chunk became local meanwhile.
  std::shared_ptr<Flight> ClaimLocked(const format::Chunk& c, bool* owned);
  // Splits chunks into ranges: chunks at most max_merge_gap apart share one, up to
  // max_request_bytes each.
  std::vector<Group> MergeIntoGroups(std::vector<ChunkRef> chunks) const;
  // Position of `c` in all_chunks_ (blob order).
  size_t BlobPosition(const format::Chunk& c) const;
  // Claims, in blob order from position `pos`, chunks neither local nor in flight until their
  // compressed span reaches `window` bytes; they are recorded as readahead of `window_id`.
  // Returns the claimed chunks and sets *end_pos past the last chunk looked at.
  std::vector<ChunkRef> ClaimWindowLocked(size_t pos, uint64_t window, uint64_t window_id,
                                          size_t* end_pos);
  // Counts a read of `key` that readahead fetched; may start the next window (returned, to be
  // submitted by the caller outside mu_).
  std::vector<ChunkRef> NoteReadaheadUseLocked(const std::string& key);
  // Fetches every chunk of `groups` with one StreamRanges call, handing each chunk to its
  // flight as soon as it is complete and verified. Runs on the calling thread.
  void RunFetch(std::vector<Group> groups, FetchKind kind);
  // Decodes/verifies/stores one chunk's compressed bytes and completes its flight.
  void FinishChunk(const ChunkRef& ref, std::string_view compressed);
  // FinishChunk for a SOCI span: the flight's data is the whole inflated span; the cache
  // stores the compressed span.
  void FinishSpan(const ChunkRef& ref, std::string_view compressed);
  // Copies `n` bytes at `chunk_off` of SOCI span chunk `c` from a recently inflated span or the
  // compressed span in the cache. False (nothing copied) when neither has it.
  bool ReadSpanLocal(const format::Chunk& c, format::Ino ino, uint64_t chunk_off, char* dst,
                     size_t n);
  // After `ref`'s bytes failed verification: when the blob reader excluded their source
  // (BlobReader::ReportCorruption, e.g. a registry mirror), fetches the chunk once more and
  // returns true (its flight stays pending); false when the failure stands.
  bool RefetchElsewhere(const ChunkRef& ref);
  // `ref`'s bytes (a chunk, or a SOCI span: `what`) failed verification with `cause`: logs and
  // counts it, then fetches elsewhere (RefetchElsewhere) or fails the flight with DataLoss.
  void RejectUnverified(const ChunkRef& ref, std::string_view what, const absl::Status& cause);
  // Completes the flight of a chunk spooled to a file (verified, then adopted if it fits).
  void FinishSpool(const ChunkRef& ref, ChunkSpool& spool);
  // PublishFlight then RetireFlight.
  void CompleteFlight(const format::Chunk& c, const std::shared_ptr<Flight>& flight,
                      absl::Status status, std::shared_ptr<const std::string> data, bool stored);
  // Hands the result to the flight's waiters; the flight stays findable (done).
  void PublishFlight(const std::shared_ptr<Flight>& flight, absl::Status status,
                     std::shared_ptr<const std::string> data);
  // Forgets the flight once its chunk is stored (or will never be): later reads go to the
  // cache (or fetch again).
  void RetireFlight(const format::Chunk& c, const std::shared_ptr<Flight>& flight, bool stored);
  // Runs RunFetch on the executor (foreground priority unless kBackground) and counts it as
  // outstanding. `permit` (background only) is released when the fetch ends.
  void SubmitFetch(std::vector<ChunkRef> chunks, FetchKind kind,
                   std::optional<BackgroundScheduler::Permit> permit = std::nullopt);
  // Waits for `flight` until `deadline`. DeadlineExceeded on timeout.
  absl::Status WaitFlight(const std::shared_ptr<Flight>& flight,
                          std::chrono::steady_clock::time_point deadline);
  absl::Status ChunkError(const format::Chunk& c, format::Ino ino, const absl::Status& st,
                          std::string_view what);
  void BackgroundMain();
  // Waits until the layer has been silent for background_silence. False if stopping.
  bool WaitSilence();
  void RunBackgroundFetch();

  const std::string layer_id_;
  const std::shared_ptr<const format::LayerIndex> index_;
  const std::shared_ptr<BlobReader> blob_;
  ChunkCache* const cache_;
  const LayerReaderOptions options_;
  std::shared_ptr<FetchExecutor> executor_;
  std::shared_ptr<BackgroundScheduler> scheduler_;
  // Every chunk of the layer sorted by compressed offset (the background fetch order).
  std::vector<const format::Chunk*> all_chunks_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // flights done, outstanding_ changes, stop
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_;
  absl::flat_hash_map<std::string, Weight> weights_;  // by key; immutable after construction
  // Raw digest -> the lengths this layer's chunks give it (one, unless the index was built
  // without check_digest_lengths), to turn a cache eviction into keys. Immutable.
  absl::flat_hash_map<std::string, std::vector<uint64_t>> lengths_by_digest_;
  absl::flat_hash_set<std::string> local_;  // keys of chunks known to be in the cache
  size_t outstanding_ = 0;                  // submitted fetches not yet finished
  size_t background_in_flight_ = 0;
  std::atomic<bool> stopping_{false};  // set under mu_; read without it by streaming fetches
  bool background_started_ = false;
  bool background_finished_ = false;
  std::thread background_thread_;
  // When this layer last started an on-demand fetch (construction counts as one).
  std::chrono::steady_clock::time_point last_on_demand_;
  DirectoryBatcher batcher_;
  // Cross-file readahead and directory batches: the current window and the chunks they
  // fetched, by key -> window id or batch id (DirectoryBatcher::IsBatchId), until a read asks
  // for them.
  struct Window {
    uint64_t id = 0;
    size_t end_pos = 0;  // blob position after the window
    uint64_t size = 0;   // compressed bytes asked for
    size_t issued = 0;   // chunks claimed
    size_t used = 0;     // of those, read since
    bool extended = false;
  };
  Window window_;
  uint64_t window_size_ = 0;
  absl::flat_hash_map<std::string, uint64_t> readahead_keys_;
  // Where each file's last miss ended, to tell sequential readers (same-file readahead) from
  // programs that jump around.
  absl::flat_hash_map<format::Ino, uint64_t> miss_ends_;
  // readahead_keys_.size() as of the last Read, so cache hits skip mu_ when it is 0.
  std::atomic<size_t> readahead_outstanding_{0};
  LayerReaderStats stats_;
  InflatedSpans inflated_spans_;  // SOCI layers only
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_LAYER_READER_H_
