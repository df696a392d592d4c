// CheckpointingInflater: inflates a whole gzip layer ONCE, front to back, handing out the
// uncompressed bytes while recording what a SOCI zTOC needs: a checkpoint at the first deflate
// block boundary after each `span_size` bytes of uncompressed output (soci's zran rule, so the
// checkpoints equal soci's own for the same blob), and the sha256 of every span's compressed
// bytes. Memory: one input buffer, one 32 KiB window, and 32 KiB per checkpoint — independent
// of the layer size but for the checkpoints themselves.
//
// RequestCheckpoint adds checkpoints of the caller's choosing (e.g. where a large file starts
// and ends, so small files do not share a span with its bytes): soci's readers find spans from
// the checkpoints' offsets, so any set of them is a valid zTOC.
//
// Not thread-safe: one user.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_CHECKPOINTING_INFLATER_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_CHECKPOINTING_INFLATER_H_

#include <zlib.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/zinfo_checkpoints.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

class CheckpointingInflater {
 public:
  struct Result {
    std::vector<OwnedCheckpoint> checkpoints;
    std::vector<Digest> span_digests;  // one per checkpoint
    uint64_t compressed_size = 0;
    uint64_t uncompressed_size = 0;  // every byte of every member
  };

  // Reads `gzip` (which must outlive this object) sequentially in `read_size` pieces.
  CheckpointingInflater(BlobReader& gzip, uint64_t span_size, size_t read_size = 1 << 20);
  ~CheckpointingInflater();
  CheckpointingInflater(const CheckpointingInflater&) = delete;
  CheckpointingInflater& operator=(const CheckpointingInflater&) = delete;

  // Appends up to `max` next uncompressed bytes to `out`; returns how many (0 only at the
  // end of the stream). Errors: DataLoss for corrupt or truncated gzip data (including
  // trailing bytes that are not a gzip member, which soci refuses too), the reader's errors
  // as is. After an error the object is unusable.
  absl::StatusOr<size_t> Read(std::string& out, size_t max);

  // Reads and discards up to the end of the stream, then returns the result. Call once.
  absl::StatusOr<Result> Finish();

  // Asks for a checkpoint at the first deflate block boundary at or after uncompressed offset
  // `offset` (the next one when the stream is already past it), unless the last checkpoint is
  // less than kMinRequestedSpan before that boundary. Offsets must not decrease from one call
  // to the next.
  void RequestCheckpoint(uint64_t offset);
  static constexpr uint64_t kMinRequestedSpan = 64 << 10;

  // Hands each checkpoint's window to `sink` (checkpoint index, window) as the checkpoint is
  // found, instead of keeping it: Result::checkpoints then have empty windows, and memory
  // stays independent of the number of checkpoints. Call before the first Read.
  void set_window_sink(std::function<void(size_t, std::string_view)> sink) {
    window_sink_ = std::move(sink);
  }

  // Uncompressed bytes produced so far.
  uint64_t position() const { return total_out_; }

 private:
  absl::Status Init();
  // Runs inflate once; sets pending_ to what it produced.
  absl::Status Step();
  absl::Status Refill();
  void HashConsumedUpTo(uint64_t end);
  void AddCheckpoint(uint8_t bits);

  BlobReader& gzip_;
  const uint64_t span_size_;
  const size_t read_size_;
  z_stream z_{};
  bool initialized_ = false;
  bool ended_ = false;
  absl::Status error_;

  std::string input_;        // current piece of the blob
  uint64_t input_base_ = 0;  // blob offset of input_[0]
  uint64_t next_read_ = 0;   // blob offset of the next piece
  uint64_t total_in_ = 0;    // compressed bytes consumed by inflate
  uint64_t total_out_ = 0;   // uncompressed bytes produced
  uint64_t last_checkpoint_out_ = 0;
  std::deque<uint64_t> requested_;  // RequestCheckpoint offsets not reached yet, ascending
  char last_byte_ = 0;              // the byte before input_base_ (for a checkpoint's bits)

  std::string window_;        // circular, kWindowSize bytes
  size_t window_pos_ = 0;     // next write position in window_
  size_t pending_begin_ = 0;  // produced but not yet handed out: window_[begin, end)
  size_t pending_end_ = 0;

  std::function<void(size_t, std::string_view)> window_sink_;
  std::unique_ptr<Sha256> span_hash_;  // the current span's; null before checkpoint 0
  uint64_t hashed_to_ = 0;             // blob offset up to which span_hash_ has bytes
  Result result_;
};

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_CHECKPOINTING_INFLATER_H_
