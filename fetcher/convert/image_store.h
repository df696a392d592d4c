// ImageStore: where the converter reads an image from and writes one to — an OCI image
// layout on disk or a registry repository. Narrow on purpose so a test can fake one.
#ifndef LAZYPULL_FETCHER_CONVERT_IMAGE_STORE_H_
#define LAZYPULL_FETCHER_CONVERT_IMAGE_STORE_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "lazypull/blob_reader.h"

namespace lazypull::convert {

// A manifest or index document with the descriptor naming it.
struct RootDocument {
  oci::Descriptor descriptor;  // media_type, digest and size of `bytes`
  std::string bytes;
};

// Implementations need not be thread-safe; the converter uses one from one thread.
class ImageStore {
 public:
  virtual ~ImageStore() = default;

  // The document the store's reference (tag or digest) names. NotFound if absent.
  virtual absl::StatusOr<RootDocument> GetRoot() = 0;
  // A manifest/index by descriptor (children of an index). Verified against the digest.
  virtual absl::StatusOr<std::string> GetManifest(const oci::Descriptor& d) = 0;
  // A small blob (config) in memory, verified against its digest.
  virtual absl::StatusOr<std::string> GetBlob(const oci::Descriptor& d) = 0;
  // A (possibly huge) blob as random-access bytes. May download into `scratch_path` first;
  // the caller deletes that file. Content is verified against the digest.
  virtual absl::StatusOr<std::unique_ptr<BlobReader>> OpenBlob(const oci::Descriptor& d,
                                                               const std::string& scratch_path) = 0;

  // Stores a blob from a local file / from memory. Idempotent for existing digests.
  virtual absl::Status PutBlobFile(const oci::Descriptor& d, const std::string& path) = 0;
  virtual absl::Status PutBlob(const oci::Descriptor& d, const std::string& bytes) = 0;
  // Stores a manifest or index by digest (children of a new index).
  virtual absl::Status PutManifest(const oci::Descriptor& d, const std::string& bytes) = 0;
  // Stores the root document and points the store's reference (tag) at it.
  virtual absl::Status PutRoot(const oci::Descriptor& d, const std::string& bytes) = 0;
};

// An OCI image layout at `dir` (created on first write, with oci-layout and index.json).
// `tag` selects the index.json entry by org.opencontainers.image.ref.name; empty means the
// only entry (when reading) or no ref name (when writing).
absl::StatusOr<std::unique_ptr<ImageStore>> OpenOciLayout(const std::string& dir,
                                                          const std::string& tag);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_IMAGE_STORE_H_
