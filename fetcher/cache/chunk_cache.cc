#include "fetcher/cache/chunk_cache.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "base/logging.h"
#include "fetcher/cache/chunk_cache_entry.h"
#include "fmt/format.h"

namespace lazypull {

namespace {

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

int64_t WallNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Pretty(const std::string& hex) { return "sha256:" + hex; }

}  // namespace

ChunkCache::ChunkCache(CacheConfig config, std::shared_ptr<CacheFs> fs, UniqueFd lock)
    : config_(std::move(config)),
      fs_(std::move(fs)),
      lock_fd_(std::move(lock)),
      chunks_dir_(config_.dir + "/chunks"),
      tmp_dir_(config_.dir + "/tmp") {}

ChunkCache::~ChunkCache() = default;

absl::StatusOr<std::unique_ptr<ChunkCache>> ChunkCache::Open(const CacheConfig& config,
                                                             std::shared_ptr<CacheFs> fs) {
  if (config.dir.empty()) {
    return absl::InvalidArgumentError("chunk cache: no directory configured (cache.dir)");
  }
  if (config.max_bytes == 0) {
    return absl::InvalidArgumentError("chunk cache: cache.max_bytes must be positive");
  }
  if (fs == nullptr) fs = NewPosixCacheFs();
  if (absl::Status s = fs->MakeDirs(config.dir); !s.ok()) return s;
  auto lock = fs->LockFile(config.dir + "/lock");
  if (!lock.ok()) return lock.status();
  std::unique_ptr<ChunkCache> cache(new ChunkCache(config, std::move(fs), std::move(*lock)));
  if (absl::Status s = cache->Load(); !s.ok()) return s;
  return cache;
}

absl::Status ChunkCache::Load() {
  if (absl::Status s = fs_->MakeDirs(tmp_dir_); !s.ok()) return s;
  if (absl::Status s = fs_->MakeDirs(chunks_dir_); !s.ok()) return s;

  // We own the directory (flock), so anything in tmp/ is a write a crash interrupted.
  auto temps = fs_->ListDir(tmp_dir_);
  if (!temps.ok()) return temps.status();
  size_t removed_temps = 0;
  for (const CacheDirEntry& t : *temps) {
    std::string path = tmp_dir_ + "/" + t.name;
    absl::Status s = fs_->Remove(path);
    if (!s.ok() && !absl::IsNotFound(s)) return s;
    ++removed_temps;
  }

  // Pre-create every shard so storing a chunk never needs a mkdir.
  for (int i = 0; i < 256; ++i) {
    if (absl::Status s = fs_->MakeDirs(fmt::format("{}/{:02x}", chunks_dir_, i)); !s.ok()) {
      return s;
    }
  }

  struct Found {
    std::string hex;
    uint64_t size;
    int64_t stamp;
  };
  std::vector<Found> found;
  auto shards = fs_->ListDir(chunks_dir_);
  if (!shards.ok()) return shards.status();
  for (const CacheDirEntry& shard : *shards) {
    if (!shard.is_dir || shard.name.size() != 2 || !IsLowerHex(shard.name)) {
      LogWarn("chunk cache: ignoring unexpected entry", {{"path", chunks_dir_ + "/" + shard.name}});
      continue;
    }
    std::string shard_dir = chunks_dir_ + "/" + shard.name;
    auto files = fs_->ListDir(shard_dir);
    if (!files.ok()) return files.status();
    for (const CacheDirEntry& f : *files) {
      std::string path = shard_dir + "/" + f.name;
      bool named_right =
          f.name.size() == 64 && IsLowerHex(f.name) && f.name.compare(0, 2, shard.name) == 0;
      auto info = named_right ? fs_->Stat(path) : absl::StatusOr<CacheFileInfo>(CacheFileInfo{});
      if (!info.ok()) return info.status();
      if (!named_right || !info->is_regular) {
        LogWarn("chunk cache: ignoring unexpected entry", {{"path", path}});
        continue;
      }
      found.push_back({f.name, info->size, info->mtime_ns});
    }
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return a.stamp != b.stamp ? a.stamp < b.stamp : a.hex < b.hex;
  });

  FdList closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Found& f : found) {  // oldest first, each pushed to the front
      Entry& e = entries_[f.hex];
      e.hex = f.hex;
      e.id = next_entry_id_++;
      e.size = f.size;
      e.stamp = f.stamp;
      e.verified = false;  // written by an earlier process: hash before serving
      lru_.push_front(&e);
      e.lru_it = lru_.begin();
      bytes_stored_ += f.size;
      last_stamp_ = std::max(last_stamp_, f.stamp);
    }
    EvictLocked(nullptr, &closing);
  }
  LogInfo("chunk cache opened", {{"dir", config_.dir},
                                 {"entries", found.size()},
                                 {"bytes", bytes_stored_},
                                 {"max_bytes", config_.max_bytes},
                                 {"removed_temp_files", removed_temps}});
  return absl::OkStatus();
}

std::string ChunkCache::ShardDir(const std::string& hex) const {
  return chunks_dir_ + "/" + hex.substr(0, 2);
}

std::string ChunkCache::PathOf(const std::string& hex) const { return ShardDir(hex) + "/" + hex; }

std::string ChunkCache::ChunkPath(const Digest& digest) const { return PathOf(digest.hex()); }

int64_t ChunkCache::NextStampLocked() {
  last_stamp_ = std::max(WallNanos(), last_stamp_ + 1);
  return last_stamp_;
}

bool ChunkCache::Contains(const Digest& digest) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.count(digest.hex()) > 0;
}

ChunkCacheStats ChunkCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ChunkCacheStats s = counters_;
  s.entries = entries_.size();
  s.bytes_stored = bytes_stored_;
  s.open_fds = fd_lru_.size();
  s.external_bytes = external_bytes_;
  s.external_accounts = external_.size();
  return s;
}

void ChunkCache::Remove(const Digest& digest) {
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(digest.hex());
    if (it == entries_.end()) return;
    id = it->second.id;
  }
  DropIfSame(digest.hex(), id, /*corrupt=*/false);
}

void ChunkCache::EraseLocked(Entry* entry, FdList* closing) {
  removed_.push_back(entry->hex);
  if (entry->fd) {
    closing->push_back(std::move(entry->fd));
    fd_lru_.erase(entry->fd_it);
  }
  lru_.erase(entry->lru_it);
  bytes_stored_ -= entry->size;
  std::string key = entry->hex;  // `entry` dies with the map node
  entries_.erase(key);
}

void ChunkCache::AddListener(EvictionListener* listener) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  listeners_.push_back(listener);
}

void ChunkCache::RemoveListener(EvictionListener* listener) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
}

void ChunkCache::NotifyRemoved() {
  std::vector<std::string> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    removed.swap(removed_);
  }
  if (removed.empty()) return;
  std::lock_guard<std::mutex> lock(listeners_mu_);
  for (const std::string& hex : removed) {
    absl::StatusOr<Digest> d = Digest::Parse("sha256:" + hex);
    if (!d.ok()) continue;
    for (EvictionListener* l : listeners_) l->OnChunkRemoved(*d);
  }
}

void ChunkCache::CacheFdLocked(Entry* entry, std::shared_ptr<const OpenChunk> fd, FdList* closing) {
  if (config_.max_open_files == 0 || entry->fd) return;
  entry->fd = std::move(fd);
  fd_lru_.push_front(entry);
  entry->fd_it = fd_lru_.begin();
  while (fd_lru_.size() > config_.max_open_files) {
    Entry* victim = fd_lru_.back();
    closing->push_back(std::move(victim->fd));
    victim->fd.reset();
    fd_lru_.pop_back();
  }
}

void ChunkCache::DropIfSame(const std::string& hex, uint64_t id, bool corrupt) {
  DropIfSameQuietly(hex, id, corrupt);
  NotifyRemoved();
}

void ChunkCache::DropIfSameQuietly(const std::string& hex, uint64_t id, bool corrupt) {
  FdList closing;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hex);
  if (it == entries_.end() || it->second.id != id) return;
  std::string path = PathOf(hex);
  absl::Status s = fs_->Remove(path);
  if (!s.ok() && !absl::IsNotFound(s)) {
    LogWarn("chunk cache: cannot remove chunk file", {{"path", path}, {"error", s.ToString()}});
  }
  EraseLocked(&it->second, &closing);
  if (corrupt) {
    ++counters_.corrupt_removed;
    // The lookup counted a hit, but nothing was served from disk.
    --counters_.hits;
    ++counters_.misses;
  }
}

absl::StatusOr<size_t> ChunkCache::ReadStored(const std::string& hex, uint64_t offset, char* buf,
                                              size_t length) {
  std::shared_ptr<const OpenChunk> fd;
  bool verified = false;
  uint64_t size = 0;
  uint64_t id = 0;
  int64_t touch_stamp = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(hex);
    if (it == entries_.end()) {
      ++counters_.misses;
      return absl::NotFoundError(fmt::format("chunk {} is not in the cache", Pretty(hex)));
    }
    Entry& e = it->second;
    if (offset > e.size) {
      return absl::OutOfRangeError(
          fmt::format("chunk {}: offset {} past its size {}", Pretty(hex), offset, e.size));
    }
    ++counters_.hits;
    lru_.splice(lru_.begin(), lru_, e.lru_it);
    if (e.fd) {
      fd_lru_.splice(fd_lru_.begin(), fd_lru_, e.fd_it);
      fd = e.fd;
    }
    verified = e.verified;
    size = e.size;
    id = e.id;
    int64_t interval_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(config_.lru_persist_interval).count();
    if (WallNanos() - e.stamp >= interval_ns) {
      e.stamp = NextStampLocked();
      touch_stamp = e.stamp;
    }
  }

  bool opened = false;
  if (!fd) {
    std::string path = PathOf(hex);
    auto f = fs_->OpenForRead(path);
    if (!f.ok()) {
      if (absl::IsNotFound(f.status())) {
        // Deleted behind our back: forget it, and let the caller fetch it again.
        LogWarn("chunk cache: chunk file vanished", {{"digest", Pretty(hex)}, {"path", path}});
        DropIfSame(hex, id, /*corrupt=*/false);
      }
      return f.status();
    }
    fd = std::make_shared<const OpenChunk>(OpenChunk{std::move(*f), std::move(path)});
    opened = true;
  }
  const std::string& path = fd->path;

  absl::StatusOr<size_t> result;
  if (!verified) {
    // First use in this process of a file an earlier process wrote: hash all of it, a block at
    // a time (a chunk may be gigabytes: memory stays one block). One extra byte is read to
    // notice a file that grew.
    constexpr size_t kVerifyBlock = 1 << 20;
    std::string block(static_cast<size_t>(std::min<uint64_t>(kVerifyBlock, size + 1)), '\0');
    Sha256 hasher;
    uint64_t read_total = 0;
    while (read_total <= size) {
      const size_t want =
          static_cast<size_t>(std::min<uint64_t>(block.size(), size + 1 - read_total));
      auto n = fs_->ReadAt(fd->fd.get(), read_total, block.data(), want, path);
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      hasher.Update(std::string_view(block.data(), *n));
      read_total += *n;
    }
    Digest actual = hasher.Finish();
    if (read_total != size || actual.hex() != hex) {
      LogWarn("chunk cache: stored chunk does not verify; removed", {{"digest", Pretty(hex)},
                                                                     {"path", path},
                                                                     {"actual", actual.ToString()},
                                                                     {"size", read_total},
                                                                     {"expected_size", size}});
      DropIfSame(hex, id, /*corrupt=*/true);
      return absl::DataLossError(
          fmt::format("chunk cache: file {} does not match chunk {} (got {}, {} bytes); removed",
                      path, Pretty(hex), actual.ToString(), read_total));
    }
  }
  {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length, size - offset));
    result = fs_->ReadAt(fd->fd.get(), offset, buf, want, path);
    if (result.ok() && *result < want) {
      LogWarn("chunk cache: stored chunk is truncated; removed",
              {{"digest", Pretty(hex)}, {"path", path}});
      DropIfSame(hex, id, /*corrupt=*/true);
      return absl::DataLossError(
          fmt::format("chunk cache: file {} of chunk {} is shorter than {} bytes; removed", path,
                      Pretty(hex), size));
    }
    if (!result.ok()) return result;
  }

  if (opened || !verified) {
    FdList closing;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(hex);
    if (it != entries_.end() && it->second.id == id) {
      it->second.verified = true;
      if (opened) CacheFdLocked(&it->second, fd, &closing);
    }
  }
  if (touch_stamp != 0) {
    // Best effort: a lost stamp only makes the post-restart LRU order less exact.
    absl::Status s = fs_->SetMtime(fd->fd.get(), touch_stamp, path);
    if (!s.ok()) LogDebug("chunk cache: cannot persist access time", {{"error", s.ToString()}});
  }
  return result;
}

absl::StatusOr<ChunkCache::ReadHandle> ChunkCache::OpenVerified(const Digest& digest) {
  const std::string hex = digest.hex();
  ReadHandle handle;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(hex);
    if (it == entries_.end()) {
      ++counters_.misses;
      return absl::NotFoundError(fmt::format("chunk {} is not in the cache", Pretty(hex)));
    }
    Entry& e = it->second;
    if (!e.verified) {
      return absl::FailedPreconditionError(
          fmt::format("chunk {} is not verified in this process yet", Pretty(hex)));
    }
    ++counters_.hits;
    lru_.splice(lru_.begin(), lru_, e.lru_it);
    handle.size_ = e.size;
    id = e.id;
    if (e.fd) {
      fd_lru_.splice(fd_lru_.begin(), fd_lru_, e.fd_it);
      handle.file_ = e.fd;
      return handle;
    }
  }
  std::string path = PathOf(hex);
  auto f = fs_->OpenForRead(path);
  if (!f.ok()) {
    if (absl::IsNotFound(f.status())) DropIfSame(hex, id, /*corrupt=*/false);
    return f.status();
  }
  handle.file_ = std::make_shared<const OpenChunk>(OpenChunk{std::move(*f), std::move(path)});
  FdList closing;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hex);
  if (it != entries_.end() && it->second.id == id)
    CacheFdLocked(&it->second, handle.file_, &closing);
  return handle;
}

absl::StatusOr<size_t> ChunkCache::Read(const Digest& digest, uint64_t offset, char* buf,
                                        size_t length) {
  return ReadStored(digest.hex(), offset, buf, length);
}

absl::Status ChunkCache::Store(const std::string& hex, std::string_view data) {
  if (data.size() > config_.max_bytes) {
    return absl::ResourceExhaustedError(
        fmt::format("chunk cache: chunk {} ({} bytes) is larger than cache.max_bytes ({})",
                    Pretty(hex), data.size(), config_.max_bytes));
  }
  int64_t stamp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.count(hex)) return absl::OkStatus();  // stored once, whoever asks
    stamp = NextStampLocked();
  }

  const std::string tmp = fmt::format("{}/{}.{}", tmp_dir_, hex, tmp_counter_.fetch_add(1));
  const std::string final_path = PathOf(hex);
  auto fail = [&](const absl::Status& s) {
    absl::Status r = fs_->Remove(tmp);
    if (!r.ok() && !absl::IsNotFound(r)) {
      LogWarn("chunk cache: cannot remove temp file", {{"path", tmp}, {"error", r.ToString()}});
    }
    return absl::Status(s.code(), fmt::format("chunk cache: cannot store chunk {}: {}", Pretty(hex),
                                              std::string(s.message())));
  };
  {
    auto fd = fs_->CreateExclusive(tmp);
    if (!fd.ok()) return fail(fd.status());
    if (absl::Status s = fs_->WriteAll(fd->get(), data, tmp); !s.ok()) return fail(s);
    if (absl::Status s = fs_->SetMtime(fd->get(), stamp, tmp); !s.ok()) return fail(s);
  }

  FdList closing;
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(hex)) {  // a concurrent Put of the same chunk won
    fs_->Remove(tmp).IgnoreError();
    return absl::OkStatus();
  }
  if (absl::Status s = fs_->Rename(tmp, final_path); !s.ok()) return fail(s);
  Entry& e = entries_[hex];
  e.hex = hex;
  e.id = next_entry_id_++;
  e.size = data.size();
  e.stamp = stamp;
  e.verified = true;  // the bytes were verified in memory before they were written
  lru_.push_front(&e);
  e.lru_it = lru_.begin();
  bytes_stored_ += e.size;
  counters_.bytes_written += e.size;
  EvictLocked(&e, &closing);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TempChunk>> ChunkCache::CreateTempChunk(const Digest& digest) {
  const std::string tmp =
      fmt::format("{}/{}.{}", tmp_dir_, digest.hex(), tmp_counter_.fetch_add(1));
  absl::StatusOr<UniqueFd> fd = fs_->CreateExclusive(tmp);
  if (!fd.ok()) return fd.status();
  // The write fd appends; readers of the verified chunk get their own read fd.
  absl::StatusOr<UniqueFd> read = fs_->OpenForRead(tmp);
  if (!read.ok()) {
    fs_->Remove(tmp).IgnoreError();
    return read.status();
  }
  return std::unique_ptr<TempChunk>(new TempChunk(fs_, std::move(*fd), std::move(*read), tmp));
}

absl::Status ChunkCache::AdoptVerified(const Digest& digest, TempChunk& temp) {
  return FinishStore(AdoptQuietly(digest, temp));
}

absl::Status ChunkCache::AdoptQuietly(const Digest& digest, TempChunk& temp) {
  const std::string hex = digest.hex();
  if (temp.size() > config_.max_bytes) {
    return absl::ResourceExhaustedError(
        fmt::format("chunk cache: chunk {} ({} bytes) is larger than cache.max_bytes ({})",
                    Pretty(hex), temp.size(), config_.max_bytes));
  }
  int64_t stamp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.count(hex)) return absl::OkStatus();
    stamp = NextStampLocked();
  }
  if (absl::Status s = fs_->SetMtime(temp.write_fd_.get(), stamp, temp.path_); !s.ok()) return s;
  FdList closing;
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(hex)) return absl::OkStatus();
  const std::string final_path = PathOf(hex);
  if (absl::Status s = fs_->Rename(temp.path_, final_path); !s.ok()) return s;
  temp.adopted_ = true;
  temp.path_ = final_path;
  Entry& e = entries_[hex];
  e.hex = hex;
  e.id = next_entry_id_++;
  e.size = temp.size();
  e.stamp = stamp;
  e.verified = true;  // the caller verified the bytes as they were written
  lru_.push_front(&e);
  e.lru_it = lru_.begin();
  bytes_stored_ += e.size;
  counters_.bytes_written += e.size;
  EvictLocked(&e, &closing);
  return absl::OkStatus();
}

absl::Status ChunkCache::Put(const Digest& digest, std::string_view data) {
  if (absl::Status s = digest.Verify(data); !s.ok()) {
    return absl::DataLossError(fmt::format("chunk cache: refusing to store chunk {}: {}",
                                           digest.ToString(), std::string(s.message())));
  }
  return FinishStore(Store(digest.hex(), data));
}

absl::Status ChunkCache::PutVerified(const Digest& digest, std::string_view data) {
  return FinishStore(Store(digest.hex(), data));
}

absl::Status ChunkCache::FinishStore(absl::Status s) {
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.store_errors;
  }
  NotifyRemoved();
  return s;
}

}  // namespace lazypull
