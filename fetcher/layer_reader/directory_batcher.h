// DirectoryBatcher: which files of a directory to fetch together with a cold miss on one of
// them.
//
// Programs read the files of one directory together (a package's modules on import, a
// locale's files, a conf.d), in an order the blob does not predict: imports jump around a
// __pycache__ by name, so blob-order readahead after the missed file catches only those that
// happen to follow it. A cold miss on a small file read from its start, in a directory that
// already had a miss (one file read is no sign that its neighbours will be), therefore also
// fetches, in the same request, the directory's other small files that are not local: nearest in
// name order first (alternating after and before the missed file), files with the missed file's
// extension before the others, until a budget of compressed bytes is reached. Files of one
// directory sit together in the blob, so the batch is usually one contiguous range.
//
// The budget adapts per layer, so a batch never turns into a blind download: it starts from
// the link (twice its bandwidth-delay product: what one more round trip would have cost) or
// initial_budget, doubles (up to max_budget) when half of the previous batch's chunks were
// read by the time of the next batch, and halves (down to min_budget) when less than a
// quarter were.
//
// Not thread-safe: its LayerReader calls it under the reader's mutex.
#ifndef LAZYPULL_FETCHER_LAYER_READER_DIRECTORY_BATCHER_H_
#define LAZYPULL_FETCHER_LAYER_READER_DIRECTORY_BATCHER_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/container/flat_hash_set.h"
#include "fetcher/format/layer_index.h"

namespace lazypull {

struct DirectoryBatchOptions {
  // Files (uncompressed) at most this large are batched, and only a miss on such a file
  // starts a batch. 0 turns batching off.
  uint64_t small_file = 256 << 10;
  // Compressed bytes of the first batch when the link is not measured yet.
  uint64_t initial_budget = 512 << 10;
  uint64_t min_budget = 64 << 10;
  uint64_t max_budget = 2 << 20;
  // Siblings looked at per batch (directories can hold hundreds of thousands of files).
  size_t max_scan = 4096;
};

class DirectoryBatcher {
 public:
  explicit DirectoryBatcher(DirectoryBatchOptions options) : options_(options) {}

  // Whether a miss on regular file `ino` of `size` bytes, at `offset`, starts a batch.
  bool Wants(uint64_t size, uint64_t offset) const {
    return options_.small_file > 0 && offset == 0 && size <= options_.small_file;
  }

  // Plans the batch for a miss on `ino`. `claim(chunk, batch_id)` is called for the chunks of
  // sibling files in priority order and returns whether it took the chunk for this fetch (not
  // local, not in flight); the caller remembers the chunk under `batch_id` to report reads of
  // it (NoteRead). Stops once the budget is spent. `link_bdp` is the link's bandwidth-delay
  // product in bytes (0 = not measured). Returns the number of chunks claimed.
  size_t Plan(const format::LayerIndex& index, format::Ino ino, uint64_t link_bdp,
              const std::function<bool(const format::Chunk&, uint64_t batch_id)>& claim);

  // Ids of batches carry this bit, so a reader can keep them in one map with other readahead.
  static constexpr uint64_t kBatchIdBit = uint64_t{1} << 63;
  static bool IsBatchId(uint64_t id) { return (id & kBatchIdBit) != 0; }

  // A read asked for a chunk that batch `id` fetched.
  void NoteRead(uint64_t id) {
    if (id == current_.id) ++current_.used;
    ++used_total_;
  }

  uint64_t budget() const { return budget_; }
  uint64_t chunks_total() const { return chunks_total_; }
  uint64_t used_total() const { return used_total_; }

 private:
  const DirectoryBatchOptions options_;
  uint64_t budget_ = 0;  // 0 until the first batch
  struct Batch {
    uint64_t id = 0;
    size_t issued = 0;
    size_t used = 0;
  };
  Batch current_;
  uint64_t next_id_ = kBatchIdBit | 1;
  // Directories that had a miss (bounded: cleared when full).
  static constexpr size_t kMaxMissedDirs = 4096;
  absl::flat_hash_set<format::Ino> missed_dirs_;
  uint64_t chunks_total_ = 0;
  uint64_t used_total_ = 0;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_DIRECTORY_BATCHER_H_
