#include "fetcher/layer_reader/layer_reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <span>
#include <utility>

#include "base/logging.h"
#include "fetcher/format/chunk_decoder.h"
#include "fmt/format.h"

namespace lazypull {

using format::Chunk;
using format::ChunkCompression;
using format::Ino;

nlohmann::json LayerReaderStats::ToJson() const {
  return {{"layer", layer_id},
          {"bytes_fetched", bytes_fetched},
          {"requests", requests},
          {"chunks_fetched", chunks_fetched},
          {"cache_hits", cache_hits},
          {"cache_misses", cache_misses},
          {"fetch_waits", fetch_waits},
          {"fetch_errors", fetch_errors},
          {"verify_errors", verify_errors},
          {"timeouts", timeouts},
          {"local_bytes", local_bytes},
          {"total_bytes", total_bytes},
          {"local_chunks", local_chunks},
          {"total_chunks", total_chunks},
          {"fetched_percent", fetched_percent()},
          {"prefetch", prefetch},
          {"background", background}};
}

absl::StatusOr<std::unique_ptr<LayerReader>> LayerReader::Create(
    std::string layer_id, std::shared_ptr<const format::LayerIndex> index,
    std::shared_ptr<BlobReader> blob, ChunkCache* cache, LayerReaderOptions options) {
  if (!index || !blob || !cache) {
    return absl::InvalidArgumentError(
        fmt::format("layer {}: LayerReader needs an index, a blob reader and a cache", layer_id));
  }
  if (options.background_concurrency == 0 || options.max_request_bytes == 0 ||
      options.background_request_bytes == 0 || options.fetch_timeout.count() <= 0) {
    return absl::InvalidArgumentError(fmt::format(
        "layer {}: background_concurrency, max_request_bytes, background_request_bytes and "
        "fetch_timeout must be positive",
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
      executor_(options_.executor) {
  if (!executor_) {
    executor_ = std::make_shared<FetchExecutor>(
        options_.foreground_threads + options_.background_concurrency,
        options_.background_concurrency);
  }
  stats_.layer_id = layer_id_;
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
    }
  }
  for (const auto& [key, w] : weights_) {
    (void)w;
    if (key.size() == 32 && cache_->Contains(Digest::FromRaw(key))) MarkLocalLocked(key);
  }
  std::sort(all_chunks_.begin(), all_chunks_.end(), [](const Chunk* a, const Chunk* b) {
    return std::tie(a->compressed_offset, a->inner_offset) <
           std::tie(b->compressed_offset, b->inner_offset);
  });
}

LayerReader::~LayerReader() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (background_thread_.joinable()) background_thread_.join();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return outstanding_ == 0; });
}

std::string LayerReader::KeyOf(const Chunk& c) {
  if (c.has_digest) return std::string(reinterpret_cast<const char*>(c.digest.data()), 32);
  return fmt::format("@{}:{}:{}", c.compressed_offset, c.inner_offset, c.length);
}

std::shared_ptr<LayerReader::Flight> LayerReader::ClaimLocked(const Chunk& c, bool* owned) {
  *owned = false;
  std::string key = KeyOf(c);
  if (auto it = flights_.find(key); it != flights_.end()) return it->second;
  if (local_.contains(key)) return nullptr;
  auto flight = std::make_shared<Flight>();
  flights_.emplace(std::move(key), flight);
  *owned = true;
  return flight;
}

std::vector<LayerReader::Group> LayerReader::MergeIntoGroups(std::vector<ChunkRef> chunks,
                                                             uint64_t max_bytes) const {
  std::sort(chunks.begin(), chunks.end(), [](const ChunkRef& a, const ChunkRef& b) {
    return a.chunk->compressed_offset < b.chunk->compressed_offset;
  });
  std::vector<Group> groups;
  for (ChunkRef& ref : chunks) {
    const Chunk& c = *ref.chunk;
    uint64_t begin = c.compressed_offset;
    uint64_t end = c.compressed_offset + c.compressed_length;
    if (!groups.empty()) {
      Group& g = groups.back();
      uint64_t new_end = std::max(g.range.end(), end);
      if (begin <= g.range.end() + options_.max_merge_gap &&
          new_end - g.range.offset <= max_bytes) {
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

void LayerReader::SubmitGroup(Group group, FetchExecutor::Priority priority) {
  const bool background = priority == FetchExecutor::Priority::kBackground;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
    if (background) ++background_in_flight_;
  }
  executor_->Submit(priority, [this, background, group = std::move(group)] {
    RunGroup(group);
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
    if (background) --background_in_flight_;
    cv_.notify_all();
  });
}

void LayerReader::MarkLocalLocked(const std::string& key) {
  if (!local_.insert(key).second) return;
  auto it = weights_.find(key);
  if (it == weights_.end()) return;
  stats_.local_bytes += it->second.bytes;
  stats_.local_chunks += it->second.chunks;
}

void LayerReader::ForgetLocalLocked(const Chunk& c) {
  std::string key = KeyOf(c);
  if (local_.erase(key) == 0) return;
  auto it = weights_.find(key);
  if (it == weights_.end()) return;
  stats_.local_bytes -= it->second.bytes;
  stats_.local_chunks -= it->second.chunks;
}

void LayerReader::CompleteFlight(const Chunk& c, const std::shared_ptr<Flight>& flight,
                                 absl::Status status, std::shared_ptr<const std::string> data,
                                 bool stored) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = KeyOf(c);
  if (stored) MarkLocalLocked(key);
  if (auto it = flights_.find(key); it != flights_.end() && it->second == flight) {
    flights_.erase(it);
  }
  flight->done = true;
  flight->status = std::move(status);
  flight->data = std::move(data);
  cv_.notify_all();
}

void LayerReader::RunGroup(const Group& group) {
  bool stopping;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping = stopping_;
  }
  absl::StatusOr<std::string> bytes =
      stopping ? absl::CancelledError(fmt::format("layer {}: reader is shutting down", layer_id_))
               : blob_->ReadAt(group.range.offset, group.range.length);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests;
    if (bytes.ok())
      stats_.bytes_fetched += group.range.length;
    else if (!stopping)
      ++stats_.fetch_errors;
  }
  if (!bytes.ok()) {
    absl::Status st(
        bytes.status().code(),
        fmt::format("layer {}: fetching blob range [{}, +{}): {}", layer_id_, group.range.offset,
                    group.range.length, std::string(bytes.status().message())));
    if (!stopping) {
      LogError("layer fetch failed", {{"layer", layer_id_},
                                      {"offset", group.range.offset},
                                      {"length", group.range.length},
                                      {"chunks", group.chunks.size()},
                                      {"error", st.ToString()}});
    }
    for (const ChunkRef& ref : group.chunks) CompleteFlight(*ref.chunk, ref.flight, st, {}, false);
    return;
  }
  for (const ChunkRef& ref : group.chunks) {
    const Chunk& c = *ref.chunk;
    std::string_view compressed;
    if (c.compression != ChunkCompression::kZeros) {
      compressed = std::string_view(*bytes).substr(c.compressed_offset - group.range.offset,
                                                   c.compressed_length);
    }
    // Decode without the digest check: ChunkCache::Put verifies before storing, so the bytes
    // are hashed once. Without a stored copy they are verified here.
    Chunk unverified = c;
    unverified.has_digest = false;
    absl::StatusOr<std::string> data = format::DecodeChunk(unverified, compressed);
    absl::Status st = data.status();
    bool stored = false;
    if (st.ok() && c.has_digest) {
      Digest digest = c.digest_value();
      absl::Status put = cache_->Put(digest, *data);
      if (put.ok()) {
        stored = true;
      } else if (put.code() == absl::StatusCode::kDataLoss) {
        st = put;
      } else {
        st = digest.Verify(*data);
        if (st.ok()) {
          LogWarn("serving a verified chunk without caching it",
                  {{"layer", layer_id_},
                   {"chunk_offset", c.compressed_offset},
                   {"error", put.ToString()}});
        }
      }
    }
    if (!st.ok()) {
      st = absl::DataLossError(
          fmt::format("layer {}: chunk at blob offset {} (+{}) failed verification: {}", layer_id_,
                      c.compressed_offset, c.compressed_length, std::string(st.message())));
      LogError("layer chunk rejected", {{"layer", layer_id_},
                                        {"chunk_offset", c.compressed_offset},
                                        {"chunk_length", c.compressed_length},
                                        {"error", st.ToString()}});
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.verify_errors;
      }
      CompleteFlight(c, ref.flight, st, {}, false);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.chunks_fetched;
    }
    CompleteFlight(c, ref.flight, absl::OkStatus(),
                   std::make_shared<const std::string>(std::move(*data)), stored);
  }
}

absl::Status LayerReader::WaitFlight(const std::shared_ptr<Flight>& flight,
                                     std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_until(lock, deadline, [&] { return flight->done; })) {
    ++stats_.timeouts;
    return absl::DeadlineExceededError(
        fmt::format("gave up after {} ms", options_.fetch_timeout.count()));
  }
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
    uint64_t chunk_off;  // first byte wanted, relative to the chunk
    size_t n;
    char* dst;
  };
  std::vector<Pending> pending;
  std::vector<ChunkRef> to_fetch;
  uint64_t hits = 0, misses = 0, waits = 0;
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
      if (c.has_digest) {
        absl::StatusOr<size_t> got = cache_->Read(c.digest_value(), chunk_off, dst, n);
        if (got.ok() && *got == n) {
          ++hits;
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
      }
      ++misses;
      if (owned) {
        to_fetch.push_back({&c, flight});
      } else {
        ++waits;
      }
      pending.push_back({&c, flight, chunk_off, n, dst});
      break;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.cache_hits += hits;
    stats_.cache_misses += misses;
    stats_.fetch_waits += waits;
  }
  if (!to_fetch.empty() && options_.readahead_bytes > 0) {
    std::span<const Chunk> file_chunks = index_->Chunks(ino);
    size_t next = (pending.back().chunk - file_chunks.data()) + 1;
    uint64_t ahead = 0;
    std::lock_guard<std::mutex> lock(mu_);
    for (; next < file_chunks.size() && ahead < options_.readahead_bytes; ++next) {
      const Chunk& c = file_chunks[next];
      ahead += c.length;
      if (c.compression == ChunkCompression::kZeros) continue;
      bool owned = false;
      std::shared_ptr<Flight> flight = ClaimLocked(c, &owned);
      if (owned) to_fetch.push_back({&c, std::move(flight)});
    }
  }
  if (!to_fetch.empty()) {
    for (Group& g : MergeIntoGroups(std::move(to_fetch), options_.max_request_bytes)) {
      SubmitGroup(std::move(g), FetchExecutor::Priority::kForeground);
    }
  }
  for (const Pending& p : pending) {
    absl::Status st = WaitFlight(p.flight, deadline);
    if (!st.ok()) {
      return ChunkError(
          *p.chunk, ino, st,
          st.code() == absl::StatusCode::kDeadlineExceeded ? "timed out reading" : "reading");
    }
    std::memcpy(p.dst, p.flight->data->data() + p.chunk_off, p.n);
  }
  return length;
}

absl::Status LayerReader::Prefetch() {
  std::optional<ByteRange> range = index_->prefetch_range();
  if (!range || range->length == 0) return absl::OkStatus();
  Group group{*range, {}};
  std::vector<std::shared_ptr<Flight>> waits;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Chunk* c : all_chunks_) {
      if (c->compression == ChunkCompression::kZeros) continue;
      if (c->compressed_offset < range->offset ||
          c->compressed_offset + c->compressed_length > range->end()) {
        continue;
      }
      bool owned = false;
      std::shared_ptr<Flight> flight = ClaimLocked(*c, &owned);
      if (!flight) continue;
      if (owned)
        group.chunks.push_back({c, flight});
      else
        waits.push_back(flight);
    }
  }
  if (!group.chunks.empty()) RunGroup(group);
  const auto deadline = std::chrono::steady_clock::now() + options_.fetch_timeout;
  for (const ChunkRef& ref : group.chunks) waits.push_back(ref.flight);
  for (const auto& flight : waits) {
    if (absl::Status st = WaitFlight(flight, deadline); !st.ok()) {
      return absl::Status(
          st.code(), fmt::format("layer {}: prefetch of [{}, +{}): {}", layer_id_, range->offset,
                                 range->length, std::string(st.message())));
    }
  }
  return absl::OkStatus();
}

void LayerReader::StartBackground() {
  std::lock_guard<std::mutex> lock(mu_);
  if (background_started_ || stopping_) return;
  background_started_ = true;
  background_thread_ = std::thread([this] { BackgroundMain(); });
}

bool LayerReader::WaitBackground(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return background_finished_; });
}

void LayerReader::BackgroundMain() {
  if (options_.prefetch) {
    bool has_range = index_->prefetch_range().has_value();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prefetch = has_range ? "running" : "none";
    }
    if (has_range) {
      absl::Status st = Prefetch();
      if (!st.ok()) {
        LogWarn("layer prefetch failed", {{"layer", layer_id_}, {"error", st.ToString()}});
      }
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prefetch = st.ok() ? "done" : "failed";
    }
  }
  if (options_.background_fetch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.background = "running";
    }
    RunBackgroundFetch();
  }
  std::lock_guard<std::mutex> lock(mu_);
  background_finished_ = true;
  cv_.notify_all();
}

void LayerReader::RunBackgroundFetch() {
  const uint64_t errors_before = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_.fetch_errors + stats_.verify_errors;
  }();
  auto next_send = std::chrono::steady_clock::now();
  size_t i = 0;
  bool stopped = false;
  while (i < all_chunks_.size() && !stopped) {
    // Claim the next batch of chunks that are neither local nor in flight.
    std::vector<ChunkRef> batch;
    uint64_t batch_begin = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stopping_ || background_in_flight_ < options_.background_concurrency;
      });
      if (stopping_) break;
      for (; i < all_chunks_.size(); ++i) {
        const Chunk* c = all_chunks_[i];
        if (c->compression == ChunkCompression::kZeros) continue;
        if (!batch.empty() && c->compressed_offset + c->compressed_length - batch_begin >
                                  options_.background_request_bytes) {
          break;
        }
        bool owned = false;
        std::shared_ptr<Flight> flight = ClaimLocked(*c, &owned);
        if (!owned) continue;
        if (batch.empty()) batch_begin = c->compressed_offset;
        batch.push_back({c, std::move(flight)});
      }
    }
    for (Group& g : MergeIntoGroups(std::move(batch), options_.background_request_bytes)) {
      if (options_.background_bandwidth > 0) {
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_until(lock, next_send, [&] { return stopping_; })) {
          stopped = true;
        }
        next_send =
            std::max(next_send, std::chrono::steady_clock::now()) +
            std::chrono::microseconds(g.range.length * 1'000'000 / options_.background_bandwidth);
      }
      if (stopped) {
        // Release the claims so nobody waits for a fetch that never starts.
        for (const ChunkRef& ref : g.chunks) {
          CompleteFlight(
              *ref.chunk, ref.flight,
              absl::CancelledError(fmt::format("layer {}: background fetch stopped", layer_id_)),
              {}, false);
        }
        continue;
      }
      SubmitGroup(std::move(g), FetchExecutor::Priority::kBackground);
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return background_in_flight_ == 0; });
  const uint64_t errors = stats_.fetch_errors + stats_.verify_errors - errors_before;
  const bool complete = stats_.local_chunks == stats_.total_chunks;
  stats_.background = stopping_ ? "stopped" : (complete ? "done" : "failed");
  if (!stopping_) {
    nlohmann::json fields = {{"layer", layer_id_},
                             {"errors", errors},
                             {"fetched_percent", stats_.fetched_percent()},
                             {"bytes_fetched", stats_.bytes_fetched}};
    if (complete)
      LogInfo("layer fully local", fields);
    else
      LogWarn("background fetch left chunks missing", fields);
  }
}

LayerReaderStats LayerReader::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace lazypull
