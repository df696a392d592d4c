#include "fetcher/cache/temp_chunk.h"

#include "base/logging.h"

namespace lazypull {

TempChunk::~TempChunk() {
  if (adopted_ || path_.empty()) return;
  absl::Status s = fs_->Remove(path_);
  if (!s.ok() && !absl::IsNotFound(s)) {
    LogWarn("chunk cache: cannot remove temp file", {{"path", path_}, {"error", s.ToString()}});
  }
}

absl::Status TempChunk::Append(std::string_view data) {
  if (absl::Status s = fs_->WriteAll(write_fd_.get(), data, path_); !s.ok()) return s;
  size_ += data.size();
  return absl::OkStatus();
}

}  // namespace lazypull
