#include "fetcher/layer_reader/layer_reader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <tuple>
#include <utility>

#include "base/logging.h"
#include "fetcher/format/chunk_decoder.h"
#include "fetcher/layer_reader/chunk_assembler.h"
#include "fetcher/layer_reader/chunk_spool.h"
#include "fmt/format.h"

namespace lazypull {
namespace {

// Files whose last miss is remembered for sequential-read detection.
constexpr size_t kMaxTrackedFiles = 4096;

}  // namespace

using format::Chunk;
using format::ChunkCompression;
using format::Ino;

absl::StatusOr<std::unique_ptr<LayerReader>> LayerReader::Create(
    std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
    std::shared_ptr<BlobReader> blob, ChunkCache* cache, LayerReaderOptions options) {
  if (!index || !blob || !cache) {
    return absl::InvalidArgumentError(
        fmt::format("layer {}: LayerReader needs an index, a blob reader and a cache", layer_id));
  }
  if (options.max_request_bytes == 0 || options.background_request_bytes == 0 ||
      options.fetch_timeout.count() <= 0 || options.background_policy.max_in_flight == 0 ||
      (options.readahead_window > 0 && (options.readahead_window_min == 0 ||
                                        options.readahead_window < options.readahead_window_min ||
                                        options.readahead_window > options.readahead_window_max))) {
    return absl::InvalidArgumentError(fmt::format(
        "layer {}: max_request_bytes, background_request_bytes, fetch_timeout and background "
        "max_in_flight must be positive, and readahead_window within [readahead_window_min, "
        "readahead_window_max]",
        layer_id));
  }
  return std::unique_ptr<LayerReader>(new LayerReader(std::move(layer_id), std::move(index),
                                                      std::move(blob), cache, std::move(options)));
}

LayerReader::LayerReader(std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
                         std::shared_ptr<BlobReader> blob, ChunkCache* cache,
                         LayerReaderOptions options)
    : layer_id_(std::move(layer_id)),
      index_(std::move(index)),
      blob_(std::move(blob)),
      cache_(cache),
      options_(std::move(options)),
      executor_(options_.executor),
      scheduler_(options_.scheduler),
      last_on_demand_(std::chrono::steady_clock::now()),
      batcher_(options_.directory_batch),
      window_size_(options_.readahead_window) {
  const size_t background_threads = options_.background_policy.max_in_flight;
  if (!executor_) {
    executor_ = std::make_shared<FetchExecutor>(options_.foreground_threads + background_threads,
                                                background_threads);
  }
  if (!scheduler_) scheduler_ = std::make_shared<BackgroundScheduler>(options_.background_policy);
  stats_.layer_id = layer_id_;
  stats_.readahead_window = window_size_;
  stats_.prefetch = options_.prefetch ? "pending" : "off";
  stats_.background = options_.background_fetch ? "pending" : "off";
  for (Ino ino = 1; ino <= index_->inode_count(); ++ino) {
    for (const Chunk& c : index_->Chunks(ino)) {
      all_chunks_.push_back(&c);
      stats_.total_bytes += c.length;
      ++stats_.total_chunks;
      if (c.compression == ChunkCompression::kZeros) {
        stats_.local_bytes += c.length;
        ++stats_.local_chunks;
        continue;
      }
      Weight& w = weights_[KeyOf(c)];
      w.bytes += c.length;
      ++w.chunks;
      if (c.has_digest) {
        std::vector<uint64_t>& lengths = lengths_by_digest_[std::string(
            reinterpret_cast<const char*>(c.digest.data()), c.digest.size())];
        if (std::find(lengths.begin(), lengths.end(), c.digest_length()) == lengths.end()) {
          lengths.push_back(c.digest_length());
        }
      }
    }
  }
  for (const auto& [raw, lengths] : lengths_by_digest_) {
    if (!cache_->Contains(Digest::FromRaw(raw))) continue;
    for (uint64_t length : lengths) MarkLocalLocked(DigestKey(raw, length));
  }
  std::sort(all_chunks_.begin(), all_chunks_.end(), BlobOrderLess);
  cache_->AddListener(this);
}

void LayerReader::Stop() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  scheduler_->Wake();
  // Fetches in flight end within about a second, even against a stalled registry.
  blob_->Cancel();
}

LayerReader::~LayerReader() {
  cache_->RemoveListener(this);
  Stop();
  if (background_thread_.joinable()) background_thread_.join();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return outstanding_ == 0; });
}

bool LayerReader::BlobOrderLess(const Chunk* a, const Chunk* b) {
  return std::tie(a->compressed_offset, a->inner_offset) <
         std::tie(b->compressed_offset, b->inner_offset);
}

std::string LayerReader::KeyOf(const Chunk& c) {
  if (!c.has_digest) return fmt::format("@{}:{}:{}", c.compressed_offset, c.inner_offset, c.length);
  return DigestKey(std::string_view(reinterpret_cast<const char*>(c.digest.data()), 32),
                   c.digest_length());
}

std::string LayerReader::DigestKey(std::string_view raw_digest, uint64_t length) {
  std::string key(raw_digest);
  for (int i = 0; i < 8; ++i) key.push_back(static_cast<char>(length >> (8 * i)));
  return key;
}

std::shared_ptr<LayerReader::Flight> LayerReader::ClaimLocked(const Chunk& c, bool* owned) {
  *owned = false;
  std::string key = KeyOf(c);
  if (auto it = flights_.find(key); it != flights_.end()) {
    // A flight that has already failed (published, not yet retired) is not joined: its error
    // was for the readers that waited for it, and a read arriving now fetches again. Its
    // RetireFlight leaves the new flight in place.
    if (!it->second->done || it->second->status.ok()) return it->second;
    it->second = std::make_shared<Flight>();
    *owned = true;
    return it->second;
  }
  if (local_.contains(key)) return nullptr;
  auto flight = std::make_shared<Flight>();
  flights_.emplace(std::move(key), flight);
  *owned = true;
  return flight;
}

std::vector<LayerReader::Group> LayerReader::MergeIntoGroups(std::vector<ChunkRef> chunks) const {
  std::sort(chunks.begin(), chunks.end(),
            [](const ChunkRef& a, const ChunkRef& b) { return BlobOrderLess(a.chunk, b.chunk); });
  std::vector<Group> groups;
  for (ChunkRef& ref : chunks) {
    const Chunk& c = *ref.chunk;
    uint64_t begin = c.compressed_offset;
    uint64_t end = c.compressed_offset + c.compressed_length;
    if (!groups.empty()) {
      Group& g = groups.back();
      uint64_t new_end = std::max(g.range.end(), end);
      if (begin <= g.range.end() + options_.max_merge_gap &&
          new_end - g.range.offset <= options_.max_request_bytes) {
        g.range.length = new_end - g.range.offset;
        g.chunks.push_back(std::move(ref));
        continue;
      }
    }
    groups.push_back(Group{{begin, end - begin}, {}});
    groups.back().chunks.push_back(std::move(ref));
  }
  return groups;
}

void LayerReader::SubmitFetch(std::vector<ChunkRef> chunks, FetchKind kind,
                              std::optional<BackgroundScheduler::Permit> permit) {
  if (chunks.empty()) return;
  const bool background = kind == FetchKind::kBackground;
  if (const format::SpanDecoder* decoder = index_->span_decoder();
      decoder != nullptr && !background) {
    // A fine SOCI index fetches span windows separately: start that now, so it overlaps the
    // spans' own transfer instead of following it (a background fetch, which nobody waits
    // for, gets them as it inflates: one window per run of spans).
    std::vector<const Chunk*> spans;
    for (const ChunkRef& ref : chunks) {
      if (ref.chunk->compression == ChunkCompression::kGzipSpan) spans.push_back(ref.chunk);
    }
    if (!spans.empty()) decoder->WillFetch(spans);
  }
  std::vector<Group> groups = MergeIntoGroups(std::move(chunks));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
    if (background) ++background_in_flight_;
  }
  // std::function needs a copyable callable: the move-only permit travels in a shared_ptr.
  auto held = std::make_shared<std::optional<BackgroundScheduler::Permit>>(std::move(permit));
  executor_->Submit(
      background ? FetchExecutor::Priority::kBackground : FetchExecutor::Priority::kForeground,
      [this, kind, background, held, groups = std::move(groups)]() mutable {
        {
          // Any fetch made for a program (its misses, their readahead) holds background back.
          std::optional<BackgroundScheduler::ForegroundActivity> activity;
          if (!background) activity.emplace(scheduler_->BeginForeground());
          RunFetch(std::move(groups), kind);
        }
        held->reset();
        std::lock_guard<std::mutex> lock(mu_);
        --outstanding_;
        if (background) --background_in_flight_;
        cv_.notify_all();
      },
      options_.fetch_source);
}

void LayerReader::MarkLocalLocked(const std::string& key) {
  if (!local_.insert(key).second) return;
  auto it = weights_.find(key);
  if (it == weights_.end()) return;
  stats_.local_bytes += it->second.bytes;
  stats_.local_chunks += it->second.chunks;
}

void LayerReader::ForgetLocalLocked(const Chunk& c) { ForgetLocalKeyLocked(KeyOf(c)); }

void LayerReader::OnChunkRemoved(const Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = lengths_by_digest_.find(digest.Raw());
  if (it == lengths_by_digest_.end()) return;
  for (uint64_t length : it->second) {
    const std::string key = DigestKey(it->first, length);
    if (!local_.contains(key)) continue;
    ForgetLocalKeyLocked(key);
    if (stats_.background == "done") stats_.background = "incomplete";
  }
}

void LayerReader::ForgetLocalKeyLocked(const std::string& key) {
  if (local_.erase(key) == 0) return;
  auto it = weights_.find(key);
  if (it == weights_.end()) return;
  stats_.local_bytes -= it->second.bytes;
  stats_.local_chunks -= it->second.chunks;
}

void LayerReader::CompleteFlight(const Chunk& c, const std::shared_ptr<Flight>& flight,
                                 absl::Status status, std::shared_ptr<const std::string> data,
                                 bool stored) {
  PublishFlight(flight, std::move(status), std::move(data));
  RetireFlight(c, flight, stored);
}

void LayerReader::PublishFlight(const std::shared_ptr<Flight>& flight, absl::Status status,
                                std::shared_ptr<const std::string> data) {
  std::lock_guard<std::mutex> lock(mu_);
  flight->done = true;
  flight->status = std::move(status);
  flight->data = std::move(data);
  cv_.notify_all();
}

void LayerReader::RetireFlight(const Chunk& c, const std::shared_ptr<Flight>& flight, bool stored) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = KeyOf(c);
  if (stored) MarkLocalLocked(key);
  if (auto it = flights_.find(key); it != flights_.end() && it->second == flight) {
    flights_.erase(it);
  }
  if (!flight->status.ok()) readahead_keys_.erase(key);
}

void LayerReader::RunFetch(std::vector<Group> groups, FetchKind kind) {
  if (groups.empty()) return;
  // Chunks too large to hold in memory are spooled to a file as they stream in; the others
  // are assembled in memory.
  struct Spooled {
    size_t index;  // in the group's chunks
    uint64_t fed = 0;
    std::unique_ptr<ChunkSpool> spool;
    bool done = false;
  };
  std::vector<std::vector<Spooled>> spooled(groups.size());
  std::vector<std::vector<size_t>> buffered(groups.size());  // assembler index -> chunk index
  std::vector<ChunkAssembler::Group> layout;
  layout.reserve(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    ChunkAssembler::Group a{groups[g].range, {}};
    const std::vector<ChunkRef>& chunks = groups[g].chunks;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const Chunk& c = *chunks[i].chunk;
      // What decoding holds in memory is the member/frame and everything it inflates to up to
      // the chunk's end (inner_offset included), so both decide. Chunks sharing a member may
      // be spooled: each spool and the assembler see every byte of the fetch.
      // SOCI spans are always inflated whole in memory (the zTOC parser caps their size).
      if (c.compression != ChunkCompression::kGzipSpan &&
          (c.compressed_length > options_.max_chunk_in_memory ||
           c.length > options_.max_chunk_in_memory ||
           c.inner_offset > options_.max_chunk_in_memory - c.length)) {
        spooled[g].push_back(Spooled{i, 0, std::make_unique<ChunkSpool>(c, cache_)});
      } else {
        buffered[g].push_back(i);
        a.chunks.push_back(c.compressed_range());
      }
    }
    layout.push_back(std::move(a));
  }
  ChunkAssembler assembler(
      std::move(layout), [&](size_t g, size_t i, std::string_view compressed) -> absl::Status {
        FinishChunk(groups[g].chunks[buffered[g][i]], compressed);
        if (stopping_) {
          return absl::CancelledError(fmt::format("layer {}: reader is shutting down", layer_id_));
        }
        return absl::OkStatus();
      });
  // Hands the bytes [offset, offset + data.size()) of group g to the spools they belong to.
  auto feed_spools = [&](size_t g, uint64_t offset, std::string_view data) -> absl::Status {
    const uint64_t end = offset + data.size();
    for (Spooled& s : spooled[g]) {
      const Chunk& c = *groups[g].chunks[s.index].chunk;
      const uint64_t from = std::max(offset, c.compressed_offset + s.fed);
      const uint64_t to = std::min(end, c.compressed_range().end());
      if (s.done || from >= to) continue;
      s.spool->Feed(data.substr(from - offset, to - from)).IgnoreError();  // Finish reports it
      s.fed += to - from;
      if (s.fed == c.compressed_length) {
        s.done = true;
        FinishSpool(groups[g].chunks[s.index], *s.spool);
      }
      if (stopping_) {
        return absl::CancelledError(fmt::format("layer {}: reader is shutting down", layer_id_));
      }
    }
    return absl::OkStatus();
  };
  auto group_of = [&](uint64_t offset) {
    return std::partition_point(groups.begin(), groups.end(),
                                [&](const Group& g) { return g.range.end() <= offset; }) -
           groups.begin();
  };
  const std::vector<ByteRange> ranges = assembler.Ranges();
  uint64_t total = 0;
  for (const ByteRange& r : ranges) total += r.length;
  const bool stopping = stopping_;
  const auto start = std::chrono::steady_clock::now();
  absl::Status st =
      stopping
          ? absl::CancelledError(fmt::format("layer {}: reader is shutting down", layer_id_))
          : blob_->StreamRanges(
                ranges, [&](uint64_t offset, std::string_view data) -> absl::Status {
                  // This runs inside the transport (libcurl's callbacks): nothing may throw
                  // through it. A failure fails this fetch's chunks, as any error does.
                  try {
                    {
                      // Counted as bytes arrive: a reader served early sees them in Stats().
                      std::lock_guard<std::mutex> lock(mu_);
                      stats_.bytes_fetched += data.size();
                      if (kind == FetchKind::kBackground) stats_.background_bytes += data.size();
                    }
                    const size_t g = group_of(offset);
                    if (g < groups.size() && !spooled[g].empty()) {
                      if (absl::Status fs = feed_spools(g, offset, data); !fs.ok()) return fs;
                    }
                    return assembler.Feed(offset, data);
                  } catch (const std::bad_alloc&) {
                    return absl::ResourceExhaustedError("out of memory decoding fetched chunks");
                  } catch (const std::exception& e) {
                    return absl::InternalError(
                        fmt::format("decoding fetched chunks: {}", e.what()));
                  }
                });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (st.ok()) scheduler_->RecordTransfer(total, elapsed);
  static constexpr const char* kKindNames[] = {"on-demand", "readahead", "prefetch", "background",
                                               "ahead"};
  if (GetLogLevel() == LogLevel::kDebug) {
    LogDebug("layer fetch", {{"layer", layer_id_},
                             {"kind", kKindNames[static_cast<int>(kind)]},
                             {"offset", ranges.front().offset},
                             {"ranges", ranges.size()},
                             {"bytes", total},
                             {"ms", std::chrono::duration<double, std::milli>(elapsed).count()},
                             {"ok", st.ok()}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests;
    if (!st.ok() && !stopping_) ++stats_.fetch_errors;
  }
  absl::Status failure = st;
  if (st.ok()) {
    failure = absl::InternalError(
        fmt::format("layer {}: the fetch ended without delivering the chunk", layer_id_));
  } else {
    failure = absl::Status(st.code(), fmt::format("layer {}: fetching {} blob range(s) from {} "
                                                  "(+{} bytes in all): {}",
                                                  layer_id_, ranges.size(), ranges.front().offset,
                                                  total, std::string(st.message())));
    if (!stopping_) {
      LogError("layer fetch failed", {{"layer", layer_id_},
                                      {"offset", ranges.front().offset},
                                      {"ranges", ranges.size()},
                                      {"bytes", total},
                                      {"error", failure.ToString()}});
    }
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < buffered[g].size(); ++i) {
      if (assembler.Done(g, i)) continue;
      const ChunkRef& ref = groups[g].chunks[buffered[g][i]];
      CompleteFlight(*ref.chunk, ref.flight, failure, {}, false);
    }
    for (const Spooled& s : spooled[g]) {
      if (s.done) continue;
      const ChunkRef& ref = groups[g].chunks[s.index];
      CompleteFlight(*ref.chunk, ref.flight, failure, {}, false);
    }
  }
}

absl::Status LayerReader::WaitFlight(const std::shared_ptr<Flight>& flight,
                                     std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_until(lock, deadline, [&] { return flight->done || stopping_; })) {
    ++stats_.timeouts;
    return absl::DeadlineExceededError(
        fmt::format("gave up after {} ms", options_.fetch_timeout.count()));
  }
  if (!flight->done) return absl::CancelledError("the layer is being unmounted");
  return flight->status;
}

absl::Status LayerReader::ChunkError(const Chunk& c, Ino ino, const absl::Status& st,
                                     std::string_view what) {
  std::string path = index_->Path(ino);
  LogError("layer read failed", {{"layer", layer_id_},
                                 {"file", path},
                                 {"chunk_offset", c.compressed_offset},
                                 {"chunk_file_offset", c.file_offset},
                                 {"error", std::string(st.message())}});
  return absl::Status(
      st.code(),
      fmt::format("layer {}: {} {} at file offset {} (blob offset {}): {}", layer_id_, what, path,
                  c.file_offset, c.compressed_offset, std::string(st.message())));
}

absl::StatusOr<size_t> LayerReader::Read(Ino ino, uint64_t offset, char* buf, size_t length) {
  absl::StatusOr<size_t> n = ReadChunks(ino, offset, buf, length);
  if (offset == 0 && n.ok() && *n > 0 && options_.file_start_observer != nullptr) {
    options_.file_start_observer->OnFileStart(layer_id_, ino, std::string_view(buf, *n));
  }
  return n;
}

absl::StatusOr<size_t> LayerReader::ReadChunks(Ino ino, uint64_t offset, char* buf, size_t length) {
  std::optional<format::InodeAttr> attr = index_->GetAttr(ino);
  if (!attr || (attr->mode & S_IFMT) != S_IFREG) {
    return absl::InvalidArgumentError(
        fmt::format("layer {}: inode {} is not a regular file", layer_id_, ino));
  }
  if (offset >= attr->size) return 0;
  length = std::min<uint64_t>(length, attr->size - offset);
  const auto deadline = std::chrono::steady_clock::now() + options_.fetch_timeout;

  struct Pending {
    const Chunk* chunk;
    std::shared_ptr<Flight> flight;
    uint64_t chunk_off;  // first byte wanted, relative to the flight's data
    size_t n;
    char* dst;
  };
  std::vector<Pending> pending;
  std::vector<ChunkRef> to_fetch;
  std::vector<ChunkRef> next_window;
  uint64_t hits = 0, misses = 0, waits = 0;
  const bool track_readahead = readahead_outstanding_.load(std::memory_order_relaxed) > 0;
  // A chunk read from local bytes: counted, and its use moves the readahead window on.
  auto local_hit = [&](const Chunk& c) {
    ++hits;
    if (!track_readahead) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ChunkRef> more = NoteReadaheadUseLocked(KeyOf(c));
    next_window.insert(next_window.end(), more.begin(), more.end());
  };
  for (const Chunk& c : index_->ChunksInRange(ino, offset, length)) {
    uint64_t begin = std::max(offset, c.file_offset);
    uint64_t end = std::min(offset + length, c.file_offset + c.length);
    if (begin >= end) continue;
    char* dst = buf + (begin - offset);
    size_t n = end - begin;
    uint64_t chunk_off = begin - c.file_offset;
    if (c.compression == ChunkCompression::kZeros) {
      std::memset(dst, 0, n);
      continue;
    }
    // A fetch may complete between our cache miss and the claim: then the chunk is local and
    // the cache is asked once more. A chunk that is "local" but missing was evicted.
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (c.compression == ChunkCompression::kGzipSpan) {
        if (ReadSpanLocal(c, ino, chunk_off, dst, n)) {
          local_hit(c);
          break;
        }
      } else if (c.has_digest) {
        absl::StatusOr<size_t> got = cache_->Read(c.digest_value(), chunk_off, dst, n);
        if (got.ok() && *got == n) {
          local_hit(c);
          break;
        }
        if (!got.ok() && got.status().code() == absl::StatusCode::kDataLoss) {
          LogWarn("cached chunk did not verify; refetching",
                  {{"layer", layer_id_},
                   {"file", index_->Path(ino)},
                   {"chunk_offset", c.compressed_offset}});
        }
      }
      bool owned = false;
      std::shared_ptr<Flight> flight;
      {
        std::lock_guard<std::mutex> lock(mu_);
        flight = ClaimLocked(c, &owned);
        if (!flight) {
          if (attempt == 0) continue;
          ForgetLocalLocked(c);
          flight = ClaimLocked(c, &owned);
        }
        if (!owned) {
          std::vector<ChunkRef> more = NoteReadaheadUseLocked(KeyOf(c));
          next_window.insert(next_window.end(), more.begin(), more.end());
        }
      }
      ++misses;
      if (owned) {
        to_fetch.push_back({&c, flight});
      } else {
        ++waits;
      }
      // A span's flight holds the whole inflated span.
      const uint64_t data_off =
          chunk_off + (c.compression == ChunkCompression::kGzipSpan ? c.inner_offset : 0);
      pending.push_back({&c, flight, data_off, n, dst});
      break;
    }
  }
  // Asked before mu_ is taken: the scheduler calls back into readers under its own lock.
  const bool wants_batch = !to_fetch.empty() && batcher_.Wants(attr->size, offset);
  const uint64_t link_bdp = wants_batch ? scheduler_->BandwidthDelayProduct() : 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.cache_hits += hits;
    stats_.cache_misses += misses;
    stats_.fetch_waits += waits;
    stats_.bytes_read += length;
    if (!to_fetch.empty()) {
      ++stats_.demand_fetches;
      last_on_demand_ = std::chrono::steady_clock::now();
      if (GetLogLevel() == LogLevel::kDebug) {
        LogDebug("layer miss", {{"layer", layer_id_},
                                {"file", index_->Path(ino)},
                                {"offset", offset},
                                {"length", length},
                                {"blob_offset", to_fetch.front().chunk->compressed_offset}});
      }
      const Chunk* last_needed = to_fetch.back().chunk;
      // Same-file readahead: the chunks after the read in this file, only for a file being
      // read sequentially: a small file read from its start (it will be read whole), or a miss
      // that starts where the file's previous miss left off, give or take a chunk. A program
      // that jumps around a big file (a shared library's pages, an ICU data file) would
      // otherwise fetch a useless chunk with every miss.
      const uint64_t slack =
          std::max<uint64_t>(options_.readahead_bytes, pending.front().chunk->length);
      auto prev = miss_ends_.find(ino);
      const bool sequential =
          (offset == 0 && attr->size <= options_.readahead_bytes) ||
          (prev != miss_ends_.end() && offset >= prev->second && offset - prev->second <= slack);
      if (miss_ends_.size() >= kMaxTrackedFiles) miss_ends_.clear();
      miss_ends_[ino] = offset + length;
      if (options_.readahead_bytes > 0 && sequential) {
        std::span<const Chunk> file_chunks = index_->Chunks(ino);
        uint64_t ahead = 0;
        for (size_t next = (pending.back().chunk - file_chunks.data()) + 1;
             next < file_chunks.size() && ahead < options_.readahead_bytes; ++next) {
          const Chunk& c = file_chunks[next];
          ahead += c.length;
          if (c.compression == ChunkCompression::kZeros) continue;
          bool owned = false;
          std::shared_ptr<Flight> flight = ClaimLocked(c, &owned);
          if (owned) {
            to_fetch.push_back({&c, std::move(flight)});
            last_needed = &c;
          }
        }
      }
      // Directory batch: the small files next to this one that programs read along with it.
      if (wants_batch) {
        batcher_.Plan(*index_, ino, link_bdp, [&](const Chunk& c, uint64_t batch_id) {
          bool owned = false;
          std::shared_ptr<Flight> flight = ClaimLocked(c, &owned);
          if (!owned) return false;
          readahead_keys_[KeyOf(c)] = batch_id;
          to_fetch.push_back({&c, std::move(flight)});
          return true;
        });
        stats_.batch_chunks = batcher_.chunks_total();
        stats_.batch_budget = batcher_.budget();
      }
      // Cross-file readahead: a new window after the last chunk fetched, in blob order. A
      // miss the previous window did not foresee, while little of it was read, shrinks it.
      if (window_size_ > 0) {
        if (window_.issued > 0 && window_.used * 4 < window_.issued) {
          window_size_ = std::max(window_size_ / 2, options_.readahead_window_min);
        }
        size_t end_pos = 0;
        std::vector<ChunkRef> ahead = ClaimWindowLocked(BlobPosition(*last_needed) + 1,
                                                        window_size_, window_.id + 1, &end_pos);
        window_ = Window{.id = window_.id + 1,
                         .end_pos = end_pos,
                         .size = window_size_,
                         .issued = ahead.size(),
                         .used = 0,
                         .extended = false};
        stats_.readahead_chunks += ahead.size();
        stats_.readahead_window = window_size_;
        to_fetch.insert(to_fetch.end(), ahead.begin(), ahead.end());
      }
    }
    readahead_outstanding_.store(readahead_keys_.size(), std::memory_order_relaxed);
  }
  SubmitFetch(std::move(next_window), FetchKind::kReadahead);
  if (pending.empty()) return length;
  // Waiting for registry bytes: background fetches hold back meanwhile.
  BackgroundScheduler::ForegroundActivity activity = scheduler_->BeginForeground();
  SubmitFetch(std::move(to_fetch), FetchKind::kOnDemand);
  for (const Pending& p : pending) {
    absl::Status st = WaitFlight(p.flight, deadline);
    if (!st.ok()) {
      return ChunkError(
          *p.chunk, ino, st,
          st.code() == absl::StatusCode::kDeadlineExceeded ? "timed out reading" : "reading");
    }
    if (p.flight->data != nullptr) {
      // The flight is this chunk's (keyed by digest AND length), so this holds; it is checked
      // anyway because a miss here would copy heap memory into a file's contents.
      const std::string& data = *p.flight->data;
      if (p.chunk_off > data.size() || p.n > data.size() - p.chunk_off) {
        return ChunkError(*p.chunk, ino,
                          absl::DataLossError(
                              fmt::format("fetched chunk holds {} bytes, the read wants [{}, +{})",
                                          data.size(), p.chunk_off, p.n)),
                          "reading");
      }
      std::memcpy(p.dst, data.data() + p.chunk_off, p.n);
      continue;
    }
    // A spooled chunk: its verified bytes are in a file.
    for (size_t done = 0; done < p.n;) {
      ssize_t got = ::pread(p.flight->file->fd(), p.dst + done, p.n - done,
                            static_cast<off_t>(p.chunk_off + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        return ChunkError(*p.chunk, ino,
                          absl::DataLossError(fmt::format(
                              "spooled chunk file: {}", got < 0 ? std::strerror(errno) : "short")),
                          "reading");
      }
      done += static_cast<size_t>(got);
    }
  }
  return length;
}

bool LayerReader::ReadSpans(Ino ino, uint64_t offset, size_t length, std::vector<Span>* spans) {
  spans->clear();
  std::optional<format::InodeAttr> attr = index_->GetAttr(ino);
  if (!attr || (attr->mode & S_IFMT) != S_IFREG) return false;
  if (offset >= attr->size) return true;
  length = std::min<uint64_t>(length, attr->size - offset);
  std::vector<std::string> readahead_hits;
  const bool track_readahead = readahead_outstanding_.load(std::memory_order_relaxed) > 0;
  for (const Chunk& c : index_->ChunksInRange(ino, offset, length)) {
    const uint64_t begin = std::max(offset, c.file_offset);
    const uint64_t end = std::min(offset + length, c.file_offset + c.length);
    if (begin >= end) continue;
    Span span{std::nullopt, begin - c.file_offset, static_cast<size_t>(end - begin)};
    if (c.compression != ChunkCompression::kZeros) {
      // Cached SOCI spans are compressed: no file holds the chunk's bytes.
      if (!c.has_digest || c.compression == ChunkCompression::kGzipSpan) return false;
      absl::StatusOr<ChunkCache::ReadHandle> file = cache_->OpenVerified(c.digest_value());
      if (!file.ok() || file->size() != c.length) return false;
      span.file = std::move(*file);
      if (track_readahead) readahead_hits.push_back(KeyOf(c));
    }
    spans->push_back(std::move(span));
  }
  std::vector<ChunkRef> next_window;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Span& sp : *spans) stats_.cache_hits += sp.file.has_value() ? 1 : 0;
    stats_.bytes_read += length;
    for (const std::string& key : readahead_hits) {
      std::vector<ChunkRef> more = NoteReadaheadUseLocked(key);
      next_window.insert(next_window.end(), more.begin(), more.end());
    }
  }
  SubmitFetch(std::move(next_window), FetchKind::kReadahead);
  if (offset == 0 && length > 0 && options_.file_start_observer != nullptr) {
    options_.file_start_observer->OnFileStart(layer_id_, ino, {});
  }
  return true;
}

bool LayerReader::LocalFileSpans(Ino ino, std::vector<Span>* spans) {
  spans->clear();
  std::optional<format::InodeAttr> attr = index_->GetAttr(ino);
  if (!attr || (attr->mode & S_IFMT) != S_IFREG) return false;
  for (const Chunk& c : index_->ChunksInRange(ino, 0, attr->size)) {
    if (c.length == 0) continue;
    Span span{std::nullopt, 0, static_cast<size_t>(c.length)};
    if (c.compression != ChunkCompression::kZeros) {
      if (!c.has_digest || c.compression == ChunkCompression::kGzipSpan) return false;
      absl::StatusOr<ChunkCache::ReadHandle> file = cache_->OpenVerified(c.digest_value());
      if (!file.ok() || file->size() != c.length) return false;
      span.file = std::move(*file);
    }
    spans->push_back(std::move(span));
  }
  return true;
}

LayerReaderStats LayerReader::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace lazypull
