// IndexRangeReader: keeps on local disk the blob bytes a layer's index was parsed from, so a
// restarted daemon re-opens the index of each mounted layer (and serves the FUSE connections it
// adopts) without a registry round trip.
//
// A blob is content-addressed: the bytes at an offset of a digest never change, so ranges read
// once may be replayed for the same digest. They are replayed only into the format's index
// parser, which verifies them (TOC digest) exactly as it verifies registry bytes: a damaged
// file fails that verification and is removed, and the index is opened from the registry.
#ifndef LAZYPULL_SERVER_REMOTE_INDEX_RANGES_H_
#define LAZYPULL_SERVER_REMOTE_INDEX_RANGES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/oci/descriptor.h"
#include "lazypull/blob_reader.h"

namespace lazypull::remote {

// A BlobReader over `inner` that answers reads lying inside ranges loaded from a file and
// records every range it had to read from `inner`. Thread-safe.
class IndexRangeReader : public BlobReader {
 public:
  // Loads the ranges saved at `path` (none if it is missing or malformed).
  IndexRangeReader(std::shared_ptr<BlobReader> inner, std::string path);

  uint64_t Size() const override { return inner_->Size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override;
  void Cancel() override { inner_->Cancel(); }
  bool ReportCorruption(uint64_t offset, uint64_t length) override {
    return inner_->ReportCorruption(offset, length);
  }

  // True when every read so far was answered from the file.
  bool AllLocal() const;
  // Number of reads answered from the file.
  int local_reads() const;
  // Writes every range read (from the file or from `inner`) to the file, atomically.
  absl::Status Save() const;
  // Removes the file (its bytes did not open the index).
  void Discard() const;

 private:
  const std::shared_ptr<BlobReader> inner_;
  const std::string path_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::string> ranges_;  // offset → bytes; guarded by mu_
  bool fetched_ = false;                    // guarded by mu_
  int local_reads_ = 0;                     // guarded by mu_
};

// format::OpenLayerIndex of `layer` in `blob`, reading through an IndexRangeReader on
// <dir>/<digest hex>: bytes saved by an earlier open are not fetched again, and the bytes of a
// successful open are saved (a failure to save is logged, not returned). Errors of
// OpenLayerIndex; bytes from the file that do not open the index are discarded and the index
// is opened from `blob` alone.
absl::StatusOr<format::LayerIndex> OpenLayerIndexKeepingBytes(std::shared_ptr<BlobReader> blob,
                                                              const oci::Descriptor& layer,
                                                              const std::string& dir);

// Removes the files under `dir` of layers not in `used_digests` ("sha256:<hex>"): kept bytes of
// layers no snapshot uses any more. Best effort (errors are logged).
void DropIndexBytesExcept(const std::string& dir, const std::set<std::string>& used_digests);

}  // namespace lazypull::remote

#endif  // LAZYPULL_SERVER_REMOTE_INDEX_RANGES_H_
