#include "fetcher/format/soci/soci_layer_open.h"

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "fetcher/format/soci/soci_layer_index.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

absl::Status Prefixed(const Digest& ztoc, const absl::Status& st) {
  return absl::Status(st.code(),
                      fmt::format("ztoc {}: {}", ztoc.ToString(), std::string(st.message())));
}

}  // namespace

void AddZtocAnnotations(const oci::Descriptor& ztoc,
                        std::map<std::string, std::string>& annotations) {
  annotations[kZtocDigestAnnotation] = ztoc.digest.ToString();
  annotations[kZtocSizeAnnotation] = std::to_string(ztoc.size);
}

absl::StatusOr<std::optional<oci::Descriptor>> ZtocFromAnnotations(
    const std::map<std::string, std::string>& annotations) {
  auto digest = annotations.find(kZtocDigestAnnotation);
  if (digest == annotations.end()) return std::nullopt;
  oci::Descriptor d;
  d.media_type = kZtocMediaType;
  absl::StatusOr<Digest> parsed = Digest::Parse(digest->second);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(fmt::format("annotation {}: {}", kZtocDigestAnnotation,
                                                  std::string(parsed.status().message())));
  }
  d.digest = *parsed;
  auto size = annotations.find(kZtocSizeAnnotation);
  int64_t n = 0;
  if (size == annotations.end() || !absl::SimpleAtoi(size->second, &n) || n <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("annotation {} must be a positive integer", kZtocSizeAnnotation));
  }
  d.size = n;
  return d;
}

absl::StatusOr<format::LayerIndex> OpenSociLayerIndex(BlobReader& ztoc_blob,
                                                      const oci::Descriptor& ztoc,
                                                      uint64_t layer_size,
                                                      const ZtocLimits& limits) {
  if (ztoc.size <= 0 || static_cast<uint64_t>(ztoc.size) > limits.max_ztoc_bytes) {
    return absl::ResourceExhaustedError(fmt::format(
        "ztoc {}: {} bytes (limit {})", ztoc.digest.ToString(), ztoc.size, limits.max_ztoc_bytes));
  }
  absl::StatusOr<std::string> bytes = ztoc_blob.ReadAt(0, static_cast<uint64_t>(ztoc.size));
  if (!bytes.ok()) return Prefixed(ztoc.digest, bytes.status());
  if (bytes->size() != static_cast<uint64_t>(ztoc.size)) {
    return absl::DataLossError(fmt::format("ztoc {}: got {} bytes, its descriptor says {}",
                                           ztoc.digest.ToString(), bytes->size(), ztoc.size));
  }
  // Verified before one byte of it is parsed.
  if (absl::Status st = ztoc.digest.Verify(*bytes); !st.ok()) {
    return absl::DataLossError(fmt::format("ztoc {} does not match its digest: {}",
                                           ztoc.digest.ToString(), std::string(st.message())));
  }
  absl::StatusOr<Ztoc> parsed = ParseZtoc(*bytes, limits);
  if (!parsed.ok()) return Prefixed(ztoc.digest, parsed.status());
  if (parsed->compressed_archive_size != layer_size) {
    return absl::DataLossError(
        fmt::format("ztoc {} describes a {}-byte layer, but the layer has {} bytes",
                    ztoc.digest.ToString(), parsed->compressed_archive_size, layer_size));
  }
  absl::StatusOr<format::LayerIndex> index =
      BuildSociLayerIndex(std::make_shared<const Ztoc>(std::move(*parsed)), ztoc.digest);
  if (!index.ok()) return Prefixed(ztoc.digest, index.status());
  return index;
}

}  // namespace lazypull::soci
