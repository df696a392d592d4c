#include "tools/optimize/blob_cache_store.h"

#include <filesystem>

namespace lazypull::optimize {
namespace {

class BlobCachingImageStore : public convert::ImageStore {
 public:
  BlobCachingImageStore(convert::ImageStore& inner, std::string dir)
      : inner_(inner), dir_(std::move(dir)) {}

  absl::StatusOr<convert::RootDocument> GetRoot() override { return inner_.GetRoot(); }
  absl::StatusOr<std::string> GetManifest(const oci::Descriptor& d) override {
    return inner_.GetManifest(d);
  }
  absl::StatusOr<std::string> GetBlob(const oci::Descriptor& d) override {
    return inner_.GetBlob(d);
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenBlob(const oci::Descriptor& d,
                                                       const std::string&) override {
    const std::string path = dir_ + "/" + d.digest.hex();
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) return NewFileBlobReader(path);
    auto reader = inner_.OpenBlob(d, path);
    if (!reader.ok()) std::filesystem::remove(path, ec);  // no partial download survives
    return reader;
  }
  absl::Status PutBlobFile(const oci::Descriptor& d, const std::string& path) override {
    return inner_.PutBlobFile(d, path);
  }
  absl::Status PutBlob(const oci::Descriptor& d, const std::string& bytes) override {
    return inner_.PutBlob(d, bytes);
  }
  absl::Status PutManifest(const oci::Descriptor& d, const std::string& bytes) override {
    return inner_.PutManifest(d, bytes);
  }
  absl::Status PutRoot(const oci::Descriptor& d, const std::string& bytes) override {
    return inner_.PutRoot(d, bytes);
  }

 private:
  convert::ImageStore& inner_;
  std::string dir_;
};

}  // namespace

std::unique_ptr<convert::ImageStore> NewBlobCachingImageStore(convert::ImageStore& inner,
                                                              const std::string& cache_dir) {
  return std::make_unique<BlobCachingImageStore>(inner, cache_dir);
}

}  // namespace lazypull::optimize
