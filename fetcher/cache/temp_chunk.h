// TempChunk: a chunk file being written in a ChunkCache's tmp/ directory as it streams in,
// for chunks too large to hold in memory (ChunkCache::CreateTempChunk, AdoptVerified).
#ifndef LAZYPULL_FETCHER_CACHE_TEMP_CHUNK_H_
#define LAZYPULL_FETCHER_CACHE_TEMP_CHUNK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "fetcher/cache/cache_fs.h"

namespace lazypull {

class ChunkCache;

// A chunk file being written in the cache's tmp/ (ChunkCache::CreateTempChunk). Its bytes are
// the caller's to verify; readers get them only after that (a verified TempChunk may be read
// through fd() while it lives, adopted or not). Destruction removes the file unless it was
// adopted. Move-only; not thread-safe while appending, read-only use (fd()) is.
class TempChunk {
 public:
  ~TempChunk();
  TempChunk(const TempChunk&) = delete;
  TempChunk& operator=(const TempChunk&) = delete;

  // Appends `data`. I/O errors keep their errno-derived code (ResourceExhausted on ENOSPC).
  absl::Status Append(std::string_view data);
  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  bool adopted() const { return adopted_; }

 private:
  friend class ChunkCache;
  TempChunk(std::shared_ptr<CacheFs> fs, UniqueFd write_fd, UniqueFd read_fd, std::string path)
      : fs_(std::move(fs)),
        write_fd_(std::move(write_fd)),
        fd_(std::move(read_fd)),
        path_(std::move(path)) {}

  std::shared_ptr<CacheFs> fs_;
  UniqueFd write_fd_;
  UniqueFd fd_;  // for reading
  std::string path_;
  uint64_t size_ = 0;
  bool adopted_ = false;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_CACHE_TEMP_CHUNK_H_
