#include "fetcher/format/soci/checkpointing_inflater.h"

#include <algorithm>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {
constexpr int kAutoHeaderWindowBits = 15 + 32;  // gzip (or zlib) header, detected
}  // namespace

CheckpointingInflater::CheckpointingInflater(BlobReader& gzip, uint64_t span_size, size_t read_size)
    : gzip_(gzip),
      span_size_(span_size),
      read_size_(std::max<size_t>(read_size, 4096)),
      window_(kWindowSize, '\0') {}

CheckpointingInflater::~CheckpointingInflater() {
  if (initialized_) inflateEnd(&z_);
}

absl::Status CheckpointingInflater::Init() {
  if (inflateInit2(&z_, kAutoHeaderWindowBits) != Z_OK) {
    return absl::ResourceExhaustedError("gzip layer: zlib init failed");
  }
  initialized_ = true;
  return absl::OkStatus();
}

void CheckpointingInflater::HashConsumedUpTo(uint64_t end) {
  if (span_hash_ == nullptr || end <= hashed_to_) return;
  const uint64_t from = std::max(hashed_to_, input_base_);
  span_hash_->Update(std::string_view(input_).substr(from - input_base_, end - from));
  hashed_to_ = end;
}

absl::Status CheckpointingInflater::Refill() {
  // Everything in input_ was consumed: it belongs to the current span (a later checkpoint
  // starts at or after it).
  HashConsumedUpTo(input_base_ + input_.size());
  if (!input_.empty()) last_byte_ = input_.back();
  input_base_ = next_read_;
  input_.clear();
  const uint64_t size = gzip_.Size();
  if (next_read_ >= size) return absl::OkStatus();
  const uint64_t n = std::min<uint64_t>(read_size_, size - next_read_);
  auto piece = gzip_.ReadAt(next_read_, n);
  if (!piece.ok()) return piece.status();
  input_ = *std::move(piece);
  next_read_ += n;
  z_.next_in = reinterpret_cast<Bytef*>(input_.data());
  z_.avail_in = static_cast<uInt>(input_.size());
  return absl::OkStatus();
}

void CheckpointingInflater::AddCheckpoint(uint8_t bits) {
  const uint64_t in = total_in_;
  if (span_hash_ != nullptr) {
    HashConsumedUpTo(in);
    result_.span_digests.push_back(span_hash_->Finish());
  }
  span_hash_ = std::make_unique<Sha256>();
  if (bits != 0) {
    // The byte holding the block's first bits starts this span (and ends the previous one).
    const char byte = in > input_base_ ? input_[in - 1 - input_base_] : last_byte_;
    span_hash_->Update(std::string_view(&byte, 1));
  }
  hashed_to_ = in;
  OwnedCheckpoint c;
  c.compressed_offset = in;
  c.uncompressed_offset = total_out_;
  c.bits = bits;
  // The window in stream order: the oldest bytes sit at the write position.
  c.window.reserve(kWindowSize);
  c.window.append(window_, window_pos_, std::string::npos);
  c.window.append(window_, 0, window_pos_);
  if (window_sink_) {
    window_sink_(result_.checkpoints.size(), c.window);
    std::string().swap(c.window);
  }
  result_.checkpoints.push_back(std::move(c));
  last_checkpoint_out_ = total_out_;
}

absl::Status CheckpointingInflater::Step() {
  if (!initialized_) {
    if (auto st = Init(); !st.ok()) return st;
  }
  if (z_.avail_in == 0) {
    if (auto st = Refill(); !st.ok()) return st;
    if (z_.avail_in == 0) {
      return absl::DataLossError(
          fmt::format("gzip layer: stream truncated at compressed offset {} (uncompressed {})",
                      total_in_, total_out_));
    }
  }
  if (window_pos_ == kWindowSize) window_pos_ = 0;
  z_.next_out = reinterpret_cast<Bytef*>(window_.data() + window_pos_);
  z_.avail_out = static_cast<uInt>(kWindowSize - window_pos_);
  const uInt in_before = z_.avail_in, out_before = z_.avail_out;
  // Z_BLOCK: stop at every deflate block boundary so each can be considered for a checkpoint.
  const int ret = inflate(&z_, Z_BLOCK);
  const uInt produced = out_before - z_.avail_out;
  total_in_ += in_before - z_.avail_in;
  total_out_ += produced;
  pending_begin_ = window_pos_;
  pending_end_ = window_pos_ + produced;
  window_pos_ += produced;
  if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR || ret == Z_MEM_ERROR) {
    return absl::DataLossError(fmt::format("gzip layer: corrupt data at compressed offset {}: {}",
                                           total_in_, z_.msg ? z_.msg : "zlib error"));
  }
  if (ret == Z_STREAM_END) {
    // Another member may follow (pigz, concatenated gzip); anything else is an error then.
    if (z_.avail_in > 0 || next_read_ < gzip_.Size()) {
      if (inflateReset2(&z_, kAutoHeaderWindowBits) != Z_OK) {
        return absl::DataLossError("gzip layer: cannot start the next member");
      }
    } else {
      ended_ = true;
    }
    return absl::OkStatus();
  }
  // At a block boundary (128) that is not the end of the member's last block (64): soci's
  // (zran's) rule — the first one, then the first after span_size more output bytes — and the
  // first at or past each requested offset.
  if ((z_.data_type & 128) && !(z_.data_type & 64)) {
    bool requested = false;
    while (!requested_.empty() && requested_.front() <= total_out_) {
      requested_.pop_front();
      requested = true;
    }
    if (total_out_ == 0 || total_out_ - last_checkpoint_out_ > span_size_ ||
        (requested && total_out_ - last_checkpoint_out_ >= kMinRequestedSpan)) {
      AddCheckpoint(static_cast<uint8_t>(z_.data_type & 7));
    }
  }
  return absl::OkStatus();
}

void CheckpointingInflater::RequestCheckpoint(uint64_t offset) {
  if (!requested_.empty() && offset < requested_.back()) return;  // out of order: ignored
  requested_.push_back(offset);
}

absl::StatusOr<size_t> CheckpointingInflater::Read(std::string& out, size_t max) {
  if (!error_.ok()) return error_;
  while (pending_begin_ == pending_end_ && !ended_) {
    if (auto st = Step(); !st.ok()) {
      error_ = st;
      return st;
    }
  }
  const size_t n = std::min(max, pending_end_ - pending_begin_);
  out.append(window_, pending_begin_, n);
  pending_begin_ += n;
  return n;
}

absl::StatusOr<CheckpointingInflater::Result> CheckpointingInflater::Finish() {
  std::string scratch;
  while (true) {
    scratch.clear();
    auto n = Read(scratch, 1 << 20);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
  }
  if (span_hash_ == nullptr) {
    return absl::DataLossError("gzip layer: no deflate block found");
  }
  HashConsumedUpTo(input_base_ + input_.size());
  result_.span_digests.push_back(span_hash_->Finish());
  span_hash_.reset();
  result_.compressed_size = gzip_.Size();
  result_.uncompressed_size = total_out_;
  return std::move(result_);
}

}  // namespace lazypull::soci
