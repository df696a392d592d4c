// ChunkCache::Entry: one stored chunk in a ChunkCache's index. Internal to fetcher/cache
// (chunk_cache.cc and chunk_cache_budget.cc); guarded by the cache's mutex.
#ifndef LAZYPULL_FETCHER_CACHE_CHUNK_CACHE_ENTRY_H_
#define LAZYPULL_FETCHER_CACHE_CHUNK_CACHE_ENTRY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "fetcher/cache/chunk_cache.h"

namespace lazypull {

struct ChunkCache::Entry {
  std::string hex;
  uint64_t id = 0;  // distinguishes a re-stored chunk from the entry a reader looked up
  uint64_t size = 0;
  int64_t stamp = 0;  // LRU stamp as last persisted in the file's mtime
  bool verified = false;
  LruList::iterator lru_it;
  std::shared_ptr<const OpenChunk> fd;  // set iff the entry is in fd_lru_
  LruList::iterator fd_it;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_CACHE_CHUNK_CACHE_ENTRY_H_
