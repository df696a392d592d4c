// LazyBlobSource: the lazy data blob of one layer (device_layout.h's blob layout) as a blob
// file. A blob range maps to the files' bytes through the layout and is read through the
// layer's LayerReader, so it is fetched, verified, cached and timed out exactly like a read on
// the FUSE backend (a chunk that does not verify is an error, never bytes); blob bytes in no
// extent (the padding up to a block boundary) are zeros.
//
// Once the layer has graduated, UseLocalCopy points the source at the local copy (through the
// copy's CopyBlobMap), so a lazy mount that outlives its switch (a container started before
// graduation keeps it) reads local bytes instead of refetching chunks released from the cache.
//
// Thread-safe (the layout is immutable, the LayerReader is thread-safe).
#ifndef LAZYPULL_MOUNT_EROFS_LAZY_BLOB_H_
#define LAZYPULL_MOUNT_EROFS_LAZY_BLOB_H_

#include <memory>
#include <mutex>
#include <vector>

#include "base/unique_fd.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "mount/erofs/blob_fs.h"
#include "mount/erofs/copy_blob_map.h"
#include "mount/erofs/device_layout.h"

namespace lazypull::mount::erofs {

class LazyBlobSource : public BlobSource {
 public:
  LazyBlobSource(std::shared_ptr<LayerReader> reader, std::shared_ptr<const BlobLayout> layout)
      : reader_(std::move(reader)), layout_(std::move(layout)) {}

  // The local copy's data file and where this blob's bytes lie in it (`map` was made for this
  // source's layout). Its bytes were verified when it was built.
  void UseLocalCopy(std::shared_ptr<const UniqueFd> file, CopyBlobMap map);

  const std::shared_ptr<const BlobLayout>& layout() const { return layout_; }
  uint64_t size() const override { return layout_->size; }
  // LayerReader errors are returned as they are (it has logged layer, file and chunk).
  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buf, size_t length) override;

 private:
  const std::shared_ptr<LayerReader> reader_;
  const std::shared_ptr<const BlobLayout> layout_;
  std::mutex mu_;  // guards the local copy
  std::shared_ptr<const UniqueFd> local_;
  std::shared_ptr<const CopyBlobMap> map_;
};

}  // namespace lazypull::mount::erofs

#endif  // LAZYPULL_MOUNT_EROFS_LAZY_BLOB_H_
