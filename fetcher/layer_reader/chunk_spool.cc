#include "fetcher/layer_reader/chunk_spool.h"

#include <utility>

namespace lazypull {

ChunkSpool::ChunkSpool(const format::Chunk& chunk, ChunkCache* cache)
    : chunk_(chunk), cache_(cache), decoder_(chunk) {}

absl::Status ChunkSpool::Feed(std::string_view compressed) {
  if (!status_.ok()) return status_;
  if (file_ == nullptr) {
    absl::StatusOr<std::unique_ptr<TempChunk>> f = cache_->CreateTempChunk(chunk_.digest_value());
    if (!f.ok()) return status_ = f.status();
    file_ = std::move(*f);
  }
  status_ = decoder_.Feed(compressed, [&](std::string_view piece) { return file_->Append(piece); });
  return status_;
}

absl::StatusOr<std::shared_ptr<const TempChunk>> ChunkSpool::Finish(bool* stored) {
  *stored = false;
  if (status_.ok() && file_ == nullptr) status_ = Feed({});
  if (status_.ok()) status_ = decoder_.Finish();
  if (!status_.ok()) {
    file_.reset();  // removes the unverified file
    return status_;
  }
  // Verified: from here the file's bytes may be served. Adopting it only saves a refetch.
  // Chunks without a digest (allow_missing_digests) are never cached.
  *stored = chunk_.has_digest && cache_->AdoptVerified(chunk_.digest_value(), *file_).ok();
  return std::shared_ptr<const TempChunk>(std::move(file_));
}

}  // namespace lazypull
