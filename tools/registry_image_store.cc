// ImageStore over a registry repository, through fetcher/registry's RegistryClient. Built
// only when that library exists (HAVE_LAZYPULL_REGISTRY, see CMakeLists.txt).
#include "tools/registry_image_store.h"

#if HAVE_LAZYPULL_REGISTRY

#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "fmt/format.h"

namespace lazypull::tools {
namespace {

class RegistryImageStore : public convert::ImageStore {
 public:
  RegistryImageStore(registry::Reference ref, std::unique_ptr<registry::RegistryClient> client)
      : ref_(std::move(ref)), client_(std::move(client)) {}

  absl::StatusOr<convert::RootDocument> GetRoot() override {
    auto m = client_->FetchManifest(ref_);
    if (!m.ok()) return m.status();
    return convert::RootDocument{m->descriptor, std::move(m->bytes)};
  }
  absl::StatusOr<std::string> GetManifest(const oci::Descriptor& d) override {
    auto m = client_->FetchManifest(ByDigest(d.digest));
    if (!m.ok()) return m.status();
    return std::move(m->bytes);
  }
  absl::StatusOr<std::string> GetBlob(const oci::Descriptor& d) override {
    return client_->FetchBlob(ref_, d);
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenBlob(const oci::Descriptor& d,
                                                       const std::string& scratch) override {
    if (auto st = client_->FetchBlobToFile(ref_, d, scratch); !st.ok()) return st;
    return NewFileBlobReader(scratch);
  }
  absl::Status PutBlobFile(const oci::Descriptor& d, const std::string& path) override {
    auto reader = NewFileBlobReader(path);
    if (!reader.ok()) return reader.status();
    return client_->PushBlob(ref_, d, **reader);
  }
  absl::Status PutBlob(const oci::Descriptor& d, const std::string& bytes) override {
    return client_->PushBlob(ref_, d, std::string_view(bytes));
  }
  absl::Status PutManifest(const oci::Descriptor& d, const std::string& bytes) override {
    return client_->PushManifest(ByDigest(d.digest), d.media_type, bytes).status();
  }
  absl::Status PutRoot(const oci::Descriptor& d, const std::string& bytes) override {
    registry::Reference target = ref_;
    if (target.tag.empty()) target = ByDigest(d.digest);
    target.digest = Digest();
    return client_->PushManifest(target, d.media_type, bytes).status();
  }

 private:
  registry::Reference ByDigest(const Digest& digest) const {
    registry::Reference r = ref_;
    r.tag.clear();
    r.digest = digest;
    return r;
  }

  registry::Reference ref_;
  std::unique_ptr<registry::RegistryClient> client_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<convert::ImageStore>> OpenRegistryImageStore(const std::string& text,
                                                                            bool plain_http) {
  auto ref = registry::ParseReference(text);
  if (!ref.ok()) return ref.status();
  registry::RegistryConfig config;
  if (plain_http) config.plain_http.insert(ref->host);
  auto client =
      std::make_unique<registry::RegistryClient>(std::move(config), registry::NewCurlTransport());
  return std::make_unique<RegistryImageStore>(std::move(*ref), std::move(client));
}

}  // namespace lazypull::tools

#else  // !HAVE_LAZYPULL_REGISTRY

#include "fmt/format.h"

namespace lazypull::tools {

absl::StatusOr<std::unique_ptr<convert::ImageStore>> OpenRegistryImageStore(const std::string& text,
                                                                            bool plain_http) {
  return absl::UnimplementedError(
      fmt::format("registry reference {}: lazypull was built without fetcher/registry", text));
}

}  // namespace lazypull::tools

#endif
