// LayerReader's readahead bookkeeping (layer_reader.h, "Readahead"): the cross-file window in
// blob order and the reads that use what readahead and directory batches fetched, kept apart
// from the read path in layer_reader.cc.
#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "fetcher/layer_reader/layer_reader.h"

namespace lazypull {

using format::Chunk;
using format::ChunkCompression;

size_t LayerReader::BlobPosition(const Chunk& c) const {
  auto it = std::lower_bound(all_chunks_.begin(), all_chunks_.end(), &c, BlobOrderLess);
  for (auto j = it; j != all_chunks_.end() && (*j)->compressed_offset == c.compressed_offset; ++j) {
    if (*j == &c) return j - all_chunks_.begin();
  }
  return it - all_chunks_.begin();
}

std::vector<LayerReader::ChunkRef> LayerReader::ClaimWindowLocked(size_t pos, uint64_t window,
                                                                  uint64_t window_id,
                                                                  size_t* end_pos) {
  std::vector<ChunkRef> claimed;
  std::optional<uint64_t> start;
  for (; pos < all_chunks_.size(); ++pos) {
    const Chunk* c = all_chunks_[pos];
    if (c->compression == ChunkCompression::kZeros) continue;
    if (!start) start = c->compressed_offset;
    if (c->compressed_offset + c->compressed_length - *start > window) break;
    bool owned = false;
    std::shared_ptr<Flight> flight = ClaimLocked(*c, &owned);
    if (!owned) continue;
    readahead_keys_[KeyOf(*c)] = window_id;
    claimed.push_back({c, std::move(flight)});
  }
  *end_pos = pos;
  return claimed;
}

size_t LayerReader::FetchAhead(std::span<const FileExtent> extents) {
  // Chunks without a digest are fetched by every read anyway (never cached); chunks another
  // layer already brought into the shared cache need no fetch. Asked before mu_ is taken.
  std::vector<const Chunk*> wanted;
  for (const FileExtent& e : extents) {
    std::optional<format::InodeAttr> attr = index_->GetAttr(e.ino);
    if (!attr || (attr->mode & S_IFMT) != S_IFREG || e.offset >= attr->size) continue;
    const uint64_t length = std::min<uint64_t>(e.length, attr->size - e.offset);
    for (const Chunk& c : index_->ChunksInRange(e.ino, e.offset, length)) {
      if (c.compression == ChunkCompression::kZeros || !c.has_digest) continue;
      if (cache_->Contains(c.digest_value())) continue;
      wanted.push_back(&c);
    }
  }
  std::vector<ChunkRef> claimed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return 0;
    for (const Chunk* cp : wanted) {
      const Chunk& c = *cp;
      bool owned = false;
      std::shared_ptr<Flight> flight = ClaimLocked(c, &owned);
      if (!owned) continue;
      readahead_keys_.try_emplace(KeyOf(c), kAheadId);
      claimed.push_back({&c, std::move(flight)});
    }
    stats_.ahead_chunks += claimed.size();
    readahead_outstanding_.store(readahead_keys_.size(), std::memory_order_relaxed);
  }
  const size_t n = claimed.size();
  SubmitFetch(std::move(claimed), FetchKind::kAhead);
  return n;
}

std::vector<LayerReader::ChunkRef> LayerReader::NoteReadaheadUseLocked(const std::string& key) {
  auto it = readahead_keys_.find(key);
  if (it == readahead_keys_.end()) return {};
  const uint64_t id = it->second;
  readahead_keys_.erase(it);
  if (id == kAheadId) {
    ++stats_.ahead_used;
    return {};
  }
  if (DirectoryBatcher::IsBatchId(id)) {
    batcher_.NoteRead(id);
    stats_.batch_used = batcher_.used_total();
    return {};
  }
  ++stats_.readahead_used;
  if (id != window_.id) return {};
  ++window_.used;
  if (window_.extended || window_.used * 2 < window_.issued) return {};
  // The program is reading through the window: fetch the next one, twice as large, before it
  // gets there.
  window_.extended = true;
  window_size_ = std::min(window_size_ * 2, options_.readahead_window_max);
  size_t end_pos = 0;
  std::vector<ChunkRef> next =
      ClaimWindowLocked(window_.end_pos, window_size_, window_.id + 1, &end_pos);
  window_ = Window{.id = window_.id + 1,
                   .end_pos = end_pos,
                   .size = window_size_,
                   .issued = next.size(),
                   .used = 0,
                   .extended = false};
  stats_.readahead_chunks += next.size();
  stats_.readahead_window = window_size_;
  return next;
}

}  // namespace lazypull
