#include "server/remote/layer_source.h"

#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace lazypull::remote {
namespace {

constexpr std::string_view kSnapshotLabelPrefix = "containerd.io/snapshot/";

std::string LabelOr(const Labels& labels, const char* key) {
  auto it = labels.find(key);
  return it == labels.end() ? std::string() : it->second;
}

// Labels that are part of the remote-snapshot protocol itself, not forwarded annotations.
bool IsProtocolLabel(std::string_view key) {
  return key.starts_with("containerd.io/snapshot/cri.") ||
         key.starts_with("containerd.io/snapshot/remote") ||
         key.starts_with("containerd.io/snapshot/lazypull.");
}

}  // namespace

absl::StatusOr<LayerSource> LayerSourceFromLabels(const Labels& labels) {
  LayerSource source;
  std::string layer_digest;
  std::string manifest_digest;
  if (!LabelOr(labels, kCriImageRefLabel).empty() &&
      !LabelOr(labels, kCriLayerDigestLabel).empty()) {
    source.image_ref = LabelOr(labels, kCriImageRefLabel);
    layer_digest = LabelOr(labels, kCriLayerDigestLabel);
    manifest_digest = LabelOr(labels, kCriManifestDigestLabel);
  } else if (!LabelOr(labels, kStargzReferenceLabel).empty() &&
             !LabelOr(labels, kStargzDigestLabel).empty()) {
    source.image_ref = LabelOr(labels, kStargzReferenceLabel);
    layer_digest = LabelOr(labels, kStargzDigestLabel);
  } else {
    return absl::NotFoundError("labels name no remote layer source (no cri.* or stargz.* labels)");
  }
  absl::StatusOr<Digest> digest = Digest::Parse(layer_digest);
  if (!digest.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad layer digest label ", layer_digest, ": ", digest.status().message()));
  }
  source.layer_digest = *digest;
  if (!manifest_digest.empty()) {
    absl::StatusOr<Digest> md = Digest::Parse(manifest_digest);
    if (!md.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad manifest digest label ", manifest_digest, ": ", md.status().message()));
    }
    source.manifest_digest = *md;
  }
  std::string layers = LabelOr(labels, kCriImageLayersLabel);
  if (layers.empty()) layers = LabelOr(labels, kStargzLayersLabel);
  for (const std::string& item :
       std::vector<std::string>(absl::StrSplit(layers, ',', absl::SkipWhitespace()))) {
    // A truncated last entry does not parse: a hint, so skip it rather than fail.
    if (absl::StatusOr<Digest> d = Digest::Parse(item); d.ok()) {
      source.image_layers.push_back(*d);
    }
  }
  for (const auto& [key, value] : labels) {
    if (key.starts_with(kSnapshotLabelPrefix) && !IsProtocolLabel(key)) {
      source.label_annotations[key] = value;
    }
  }
  return source;
}

Labels ResolvedLayerToLabels(const ResolvedLayer& layer) {
  return {{kSourceRefLabel, layer.image_ref},
          {kSourceLayerLabel, oci::DescriptorToJson(layer.layer).dump()}};
}

absl::StatusOr<ResolvedLayer> ResolvedLayerFromLabels(const Labels& labels) {
  auto ref = labels.find(kSourceRefLabel);
  auto layer = labels.find(kSourceLayerLabel);
  if (ref == labels.end() || layer == labels.end()) {
    return absl::NotFoundError("snapshot labels carry no persisted lazypull layer source");
  }
  nlohmann::json j = nlohmann::json::parse(layer->second, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("label ", kSourceLayerLabel, " is not JSON"));
  }
  absl::StatusOr<oci::Descriptor> desc = oci::DescriptorFromJson(j, kSourceLayerLabel);
  if (!desc.ok()) return desc.status();
  return ResolvedLayer{.image_ref = ref->second, .layer = std::move(*desc)};
}

}  // namespace lazypull::remote
