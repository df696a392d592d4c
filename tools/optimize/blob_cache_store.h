// BlobCachingImageStore: an ImageStore that keeps every blob it had to download, so
// `convert --optimize` fetches each source layer once although it reads the layers twice
// (to run the image, then to convert them).
//
// Stores that read blobs in place (an OCI layout) write nothing, so nothing is copied. Not
// thread-safe (as ImageStore).
#ifndef LAZYPULL_TOOLS_OPTIMIZE_BLOB_CACHE_STORE_H_
#define LAZYPULL_TOOLS_OPTIMIZE_BLOB_CACHE_STORE_H_

#include <memory>
#include <string>

#include "fetcher/convert/image_store.h"

namespace lazypull::optimize {

// Wraps `inner` (not owned; must outlive the result). Downloads land in `cache_dir` (an
// existing directory the caller removes) as <digest hex>; OpenBlob's scratch path is unused.
std::unique_ptr<convert::ImageStore> NewBlobCachingImageStore(convert::ImageStore& inner,
                                                              const std::string& cache_dir);

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_BLOB_CACHE_STORE_H_
