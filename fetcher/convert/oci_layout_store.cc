// ImageStore over an OCI image layout directory (image-spec image-layout.md).
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "base/atomic_file.h"
#include "fetcher/convert/image_store.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::convert {
namespace {

namespace fs = std::filesystem;
constexpr char kRefNameAnnotation[] = "org.opencontainers.image.ref.name";

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("cannot open {}", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class OciLayoutStore : public ImageStore {
 public:
  OciLayoutStore(std::string dir, std::string tag) : dir_(std::move(dir)), tag_(std::move(tag)) {}

  absl::StatusOr<RootDocument> GetRoot() override {
    auto index_bytes = ReadWholeFile(dir_ + "/index.json");
    if (!index_bytes.ok()) return index_bytes.status();
    nlohmann::json index = nlohmann::json::parse(*index_bytes, nullptr, false);
    if (index.is_discarded() || !index.is_object() || !index.contains("manifests") ||
        !index["manifests"].is_array()) {
      return absl::InvalidArgumentError(fmt::format("{}/index.json is not an OCI index", dir_));
    }
    std::vector<oci::Descriptor> candidates;
    for (size_t i = 0; i < index["manifests"].size(); ++i) {
      auto d = oci::DescriptorFromJson(index["manifests"][i], fmt::format("manifests[{}]", i));
      if (!d.ok()) return d.status();
      if (tag_.empty() || d->Annotation(kRefNameAnnotation) == tag_) candidates.push_back(*d);
    }
    if (candidates.empty()) {
      return absl::NotFoundError(
          fmt::format("no image tagged \"{}\" in OCI layout {}", tag_, dir_));
    }
    if (candidates.size() > 1 && tag_.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "OCI layout {} holds {} images: name one with oci:DIR:TAG", dir_, candidates.size()));
    }
    RootDocument root;
    root.descriptor = candidates.front();
    auto bytes = GetManifest(root.descriptor);
    if (!bytes.ok()) return bytes.status();
    root.bytes = std::move(*bytes);
    root.descriptor.annotations.erase(kRefNameAnnotation);
    return root;
  }

  absl::StatusOr<std::string> GetManifest(const oci::Descriptor& d) override { return GetBlob(d); }

  absl::StatusOr<std::string> GetBlob(const oci::Descriptor& d) override {
    auto data = ReadWholeFile(BlobPath(d));
    if (!data.ok()) return data.status();
    if (auto st = d.digest.Verify(*data); !st.ok()) return st;
    return data;
  }

  absl::StatusOr<std::unique_ptr<BlobReader>> OpenBlob(const oci::Descriptor& d,
                                                       const std::string&) override {
    // Local blobs are trusted to match their content-addressed name (as containerd's
    // content store does); the converter's DiffID check catches a corrupt layer.
    return NewFileBlobReader(BlobPath(d));
  }

  absl::Status PutBlobFile(const oci::Descriptor& d, const std::string& path) override {
    if (auto st = EnsureLayout(); !st.ok()) return st;
    std::string dst = BlobPath(d);
    if (fs::exists(dst)) return absl::OkStatus();
    std::error_code ec;
    fs::copy_file(path, dst + ".tmp", fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(fmt::format("copy {} to {}: {}", path, dst, ec.message()));
    fs::rename(dst + ".tmp", dst, ec);
    if (ec) return absl::InternalError(fmt::format("rename to {}: {}", dst, ec.message()));
    return absl::OkStatus();
  }

  absl::Status PutBlob(const oci::Descriptor& d, const std::string& bytes) override {
    if (auto st = EnsureLayout(); !st.ok()) return st;
    return WriteFileAtomically(BlobPath(d), bytes, 0644);
  }

  absl::Status PutManifest(const oci::Descriptor& d, const std::string& bytes) override {
    return PutBlob(d, bytes);
  }

  absl::Status PutRoot(const oci::Descriptor& d, const std::string& bytes) override {
    if (auto st = PutBlob(d, bytes); !st.ok()) return st;
    nlohmann::json index = {{"schemaVersion", 2},
                            {"mediaType", std::string(oci::kOciIndex)},
                            {"manifests", nlohmann::json::array()}};
    if (auto existing = ReadWholeFile(dir_ + "/index.json"); existing.ok()) {
      auto parsed = nlohmann::json::parse(*existing, nullptr, false);
      if (!parsed.is_discarded() && parsed.is_object() && parsed.contains("manifests")) {
        index = parsed;
      }
    }
    nlohmann::json kept = nlohmann::json::array();
    for (const auto& m : index["manifests"]) {
      std::string ref;
      if (m.contains("annotations") && m["annotations"].contains(kRefNameAnnotation)) {
        ref = m["annotations"][kRefNameAnnotation].get<std::string>();
      }
      if (ref != tag_) kept.push_back(m);
    }
    oci::Descriptor entry = d;
    if (!tag_.empty()) entry.annotations[kRefNameAnnotation] = tag_;
    kept.push_back(oci::DescriptorToJson(entry));
    index["manifests"] = kept;
    return WriteFileAtomically(dir_ + "/index.json", index.dump(), 0644);
  }

 private:
  std::string BlobPath(const oci::Descriptor& d) const {
    return dir_ + "/blobs/sha256/" + d.digest.hex();
  }

  absl::Status EnsureLayout() {
    std::error_code ec;
    fs::create_directories(dir_ + "/blobs/sha256", ec);
    if (ec) return absl::InternalError(fmt::format("mkdir {}: {}", dir_, ec.message()));
    if (!fs::exists(dir_ + "/oci-layout")) {
      return WriteFileAtomically(dir_ + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644);
    }
    return absl::OkStatus();
  }

  std::string dir_;
  std::string tag_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ImageStore>> OpenOciLayout(const std::string& dir,
                                                          const std::string& tag) {
  if (dir.empty()) return absl::InvalidArgumentError("OCI layout path is empty");
  return std::make_unique<OciLayoutStore>(dir, tag);
}

}  // namespace lazypull::convert
