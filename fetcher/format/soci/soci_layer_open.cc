#include "fetcher/format/soci/soci_layer_open.h"

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/fine_windows.h"
#include "fetcher/format/soci/soci_layer_index.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

absl::Status Prefixed(const Digest& ztoc, const absl::Status& st) {
  return absl::Status(st.code(),
                      fmt::format("ztoc {}: {}", ztoc.ToString(), std::string(st.message())));
}

// Reads `d` whole (its exact size, at most `cap`) and checks it against its digest.
absl::StatusOr<std::string> ReadVerified(BlobReader& blob, const oci::Descriptor& d, uint64_t cap,
                                         std::string_view what) {
  if (d.size <= 0 || static_cast<uint64_t>(d.size) > cap) {
    return absl::ResourceExhaustedError(
        fmt::format("{} {}: {} bytes (limit {})", what, d.digest.ToString(), d.size, cap));
  }
  absl::StatusOr<std::string> bytes = blob.ReadAt(0, static_cast<uint64_t>(d.size));
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(), fmt::format("{} {}: {}", what, d.digest.ToString(),
                                                           std::string(bytes.status().message())));
  }
  if (bytes->size() != static_cast<uint64_t>(d.size)) {
    return absl::DataLossError(fmt::format("{} {}: got {} bytes, its descriptor says {}", what,
                                           d.digest.ToString(), bytes->size(), d.size));
  }
  // Verified before one byte of it is parsed.
  if (absl::Status st = d.digest.Verify(*bytes); !st.ok()) {
    return absl::DataLossError(fmt::format("{} {} does not match its digest: {}", what,
                                           d.digest.ToString(), std::string(st.message())));
  }
  return bytes;
}

absl::StatusOr<oci::Descriptor> DescriptorFromAnnotations(
    const std::map<std::string, std::string>& annotations, std::string_view digest_key,
    std::string_view size_key, std::string_view media_type) {
  oci::Descriptor d;
  d.media_type = std::string(media_type);
  auto digest = annotations.find(std::string(digest_key));
  if (digest == annotations.end()) {
    return absl::InvalidArgumentError(fmt::format("annotation {} is missing", digest_key));
  }
  absl::StatusOr<Digest> parsed = Digest::Parse(digest->second);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("annotation {}: {}", digest_key, std::string(parsed.status().message())));
  }
  d.digest = *parsed;
  auto size = annotations.find(std::string(size_key));
  int64_t n = 0;
  if (size == annotations.end() || !absl::SimpleAtoi(size->second, &n) || n <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("annotation {} must be a positive integer", size_key));
  }
  d.size = n;
  return d;
}

}  // namespace

void AddZtocAnnotations(const oci::Descriptor& ztoc,
                        std::map<std::string, std::string>& annotations) {
  annotations[kZtocDigestAnnotation] = ztoc.digest.ToString();
  annotations[kZtocSizeAnnotation] = std::to_string(ztoc.size);
  for (std::string_view key : {kAnnotationFineZtocDigest, kAnnotationFineZtocSize,
                               kAnnotationFineWindowsDigest, kAnnotationFineWindowsSize}) {
    auto it = ztoc.annotations.find(std::string(key));
    if (it != ztoc.annotations.end()) annotations[std::string(key)] = it->second;
  }
}

absl::StatusOr<std::optional<FineRef>> FineFromAnnotations(
    const std::map<std::string, std::string>& annotations) {
  if (!annotations.count(std::string(kAnnotationFineZtocDigest))) return std::nullopt;
  absl::StatusOr<oci::Descriptor> fine = DescriptorFromAnnotations(
      annotations, kAnnotationFineZtocDigest, kAnnotationFineZtocSize, kFineZtocMediaType);
  if (!fine.ok()) return fine.status();
  absl::StatusOr<oci::Descriptor> windows = DescriptorFromAnnotations(
      annotations, kAnnotationFineWindowsDigest, kAnnotationFineWindowsSize, kFineWindowsMediaType);
  if (!windows.ok()) return windows.status();
  return FineRef{.fine = *std::move(fine), .windows = *std::move(windows)};
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

absl::StatusOr<format::LayerIndex> OpenFineSociLayerIndex(BlobReader& fine_blob,
                                                          std::shared_ptr<BlobReader> windows_blob,
                                                          const FineRef& ref, uint64_t layer_size,
                                                          const ZtocLimits& limits) {
  const Digest& digest = ref.fine.digest;
  auto fail = [&](const absl::Status& st) {
    return absl::Status(
        st.code(), fmt::format("fine index {}: {}", digest.ToString(), std::string(st.message())));
  };
  absl::StatusOr<std::string> bytes =
      ReadVerified(fine_blob, ref.fine, limits.max_ztoc_bytes, "fine index");
  if (!bytes.ok()) return bytes.status();
  FineLimits fine_limits;
  fine_limits.max_ztoc_bytes = limits.max_ztoc_bytes;
  fine_limits.max_windows = limits.max_checkpoints;
  absl::StatusOr<FineFrame> frame = DecodeFineBlob(*bytes, fine_limits);
  if (!frame.ok()) return fail(frame.status());
  bytes->clear();
  ZtocLimits ztoc_limits = limits;
  ztoc_limits.windowless_checkpoints = true;
  absl::StatusOr<Ztoc> parsed = ParseZtoc(frame->ztoc, ztoc_limits);
  if (!parsed.ok()) return fail(parsed.status());
  std::string().swap(frame->ztoc);
  if (parsed->compressed_archive_size != layer_size) {
    return absl::DataLossError(
        fmt::format("fine index {} describes a {}-byte layer, but the layer has {} bytes",
                    digest.ToString(), parsed->compressed_archive_size, layer_size));
  }
  if (frame->windows.size() != parsed->span_count()) {
    return fail(absl::InvalidArgumentError(
        fmt::format("{} windows for {} checkpoints", frame->windows.size(), parsed->span_count())));
  }
  const uint64_t windows_size = static_cast<uint64_t>(ref.windows.size);
  if (windows_blob == nullptr || windows_blob->Size() != windows_size) {
    return fail(absl::DataLossError(fmt::format(
        "the windows blob {} has {} bytes, its descriptor says {}", ref.windows.digest.ToString(),
        windows_blob == nullptr ? 0 : windows_blob->Size(), windows_size)));
  }
  // ParseFineFrame checked the windows are in order: the last one ends last.
  if (!frame->windows.empty() &&
      frame->windows.back().offset + frame->windows.back().length > windows_size) {
    return fail(absl::InvalidArgumentError(
        fmt::format("windows end past the {}-byte windows blob", windows_size)));
  }
  auto windows =
      std::make_shared<const FineWindows>(std::move(windows_blob), std::move(frame->windows));
  absl::StatusOr<format::LayerIndex> index = BuildSociLayerIndex(
      std::make_shared<const Ztoc>(std::move(*parsed)), digest, {}, std::move(windows));
  if (!index.ok()) return fail(index.status());
  return index;
}

}  // namespace lazypull::soci
