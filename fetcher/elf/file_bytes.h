// FileBytes: the bytes of one file known so far, as disjoint pieces at file offsets.
//
// The ELF parser works on whatever a lazy read has brought (the first chunk, later the
// ranges it asked for), so it needs "these bytes if present" rather than a whole file.
// Pieces are merged when they touch, so a range that spans two additions is still one view.
//
// Thread-safety: none (a value type); const methods may run concurrently with each other.
// Views returned by Get()/GetPrefix() stay valid until the next Add().
#ifndef LAZYPULL_FETCHER_ELF_FILE_BYTES_H_
#define LAZYPULL_FETCHER_ELF_FILE_BYTES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lazypull/blob_reader.h"

namespace lazypull::elf {

class FileBytes {
 public:
  explicit FileBytes(uint64_t file_size) : file_size_(file_size) {}

  uint64_t file_size() const { return file_size_; }
  // Bytes held (for budgets and tests).
  uint64_t bytes_held() const;

  // Records file[offset, offset + data.size()). Bytes past file_size() are dropped; where
  // pieces overlap the newer bytes win (they are the same file, so either is right).
  void Add(uint64_t offset, std::string_view data);

  // file[offset, offset + length) if every byte of it is held; nullopt otherwise (and for a
  // range past file_size()). A zero-length range inside the file is always held.
  std::optional<std::string_view> Get(uint64_t offset, uint64_t length) const;

  // The held bytes from `offset` on, at most `max_length`: shorter when the piece holding
  // `offset` ends sooner; empty when `offset` itself is not held.
  std::string_view GetPrefix(uint64_t offset, uint64_t max_length) const;

  // The parts of `range` (clipped to the file) that are not held, in order.
  std::vector<ByteRange> Missing(ByteRange range) const;

 private:
  uint64_t file_size_;
  std::map<uint64_t, std::string> pieces_;  // by offset; disjoint and never adjacent
};

// Sorts `ranges`, drops empty ones and merges those that overlap or lie at most `gap` bytes
// apart (fewer, larger requests: a gap of a few KiB costs less than a round trip).
std::vector<ByteRange> CoalesceRanges(std::vector<ByteRange> ranges, uint64_t gap = 0);

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_FILE_BYTES_H_
