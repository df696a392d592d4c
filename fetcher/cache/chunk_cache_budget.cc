// The budget of a ChunkCache: LRU eviction down to max_bytes, counting the external accounts
// (bytes kept outside the cache, chunk_cache.h), and cold-first ordering of redundant chunks.
#include <string>

#include "base/logging.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/cache/chunk_cache_entry.h"
#include "fmt/format.h"

namespace lazypull {

void ChunkCache::EvictLocked(const Entry* keep, FdList* closing) {
  while (bytes_stored_ + external_bytes_ > config_.max_bytes && !lru_.empty()) {
    Entry* victim = lru_.back();
    if (victim == keep) break;  // keep is the newest, at the front: nothing older is left
    // Unlinked under the lock so a concurrent re-store of the same digest cannot race with
    // it. Readers holding the fd keep reading the unlinked inode safely.
    std::string path = PathOf(victim->hex);
    absl::Status s = fs_->Remove(path);
    if (!s.ok() && !absl::IsNotFound(s)) {
      LogWarn("chunk cache: cannot remove evicted chunk",
              {{"path", path}, {"error", s.ToString()}});
    }
    EraseLocked(victim, closing);
    ++counters_.evictions;
  }
}

void ChunkCache::SetExternalLocked(const std::string& key, uint64_t bytes) {
  auto it = external_.find(key);
  if (it != external_.end()) {
    external_bytes_ -= it->second;
    if (bytes == 0) {
      external_.erase(it);
    } else {
      it->second = bytes;
    }
  } else if (bytes > 0) {
    external_.emplace(key, bytes);
  }
  external_bytes_ += bytes;
}

void ChunkCache::SetExternalBytes(const std::string& key, uint64_t bytes) {
  FdList closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SetExternalLocked(key, bytes);
    EvictLocked(nullptr, &closing);
  }
  NotifyRemoved();
}

absl::Status ChunkCache::ReserveExternalBytes(const std::string& key, uint64_t bytes) {
  FdList closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = external_.find(key);
    const uint64_t others = external_bytes_ - (it != external_.end() ? it->second : 0);
    if (others + bytes > config_.max_bytes) {
      return absl::ResourceExhaustedError(fmt::format(
          "chunk cache: {} bytes for \"{}\" do not fit cache.max_bytes ({}) beside the {} "
          "bytes already kept outside the cache",
          bytes, key, config_.max_bytes, others));
    }
    SetExternalLocked(key, bytes);
    EvictLocked(nullptr, &closing);
  }
  NotifyRemoved();
  return absl::OkStatus();
}

uint64_t ChunkCache::ExternalBytes(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = external_.find(key);
  return it == external_.end() ? 0 : it->second;
}

void ChunkCache::MakeColdest(const Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(digest.hex());
  if (it == entries_.end()) return;
  lru_.splice(lru_.end(), lru_, it->second.lru_it);
}

}  // namespace lazypull
