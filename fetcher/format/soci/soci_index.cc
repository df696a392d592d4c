#include "fetcher/format/soci/soci_index.h"

#include <set>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/status_util.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("soci index: {}", what));
}

}  // namespace

std::string_view SociIndexArtifactType(SociIndexVersion v) {
  return v == SociIndexVersion::kV1 ? kSociIndexV1 : kSociIndexV2;
}

const ZtocRef* SociIndex::Find(const Digest& layer) const {
  for (const ZtocRef& r : ztocs) {
    if (r.layer_digest == layer) return &r;
  }
  return nullptr;
}

absl::StatusOr<SociIndex> ParseSociIndex(std::string_view bytes, uint64_t max_ztoc_size) {
  auto m = oci::ParseManifest(bytes, oci::kOciManifest);
  if (!m.ok()) return Invalid(format::Msg(m.status()));
  if (m->media_type != oci::kOciManifest) {
    return Invalid(fmt::format("media type {} (want an OCI image manifest)", m->media_type));
  }
  SociIndex index;
  if (m->config.media_type == kSociIndexV1) {
    index.version = SociIndexVersion::kV1;
  } else if (m->config.media_type == kSociIndexV2) {
    index.version = SociIndexVersion::kV2;
  } else {
    return Invalid(
        fmt::format("unknown index version: config media type {}", m->config.media_type));
  }
  index.subject = m->subject;
  index.build_tool_identifier = m->annotations.count(std::string(kAnnotationBuildTool))
                                    ? m->annotations.at(std::string(kAnnotationBuildTool))
                                    : "";
  std::set<Digest> seen;
  for (size_t i = 0; i < m->layers.size(); ++i) {
    const oci::Descriptor& d = m->layers[i];
    if (d.media_type == kSociPrefetchMediaType) continue;
    if (d.media_type == kFineZtocMediaType || d.media_type == kFineWindowsMediaType) {
      index.extra_blobs.push_back(d);
      continue;
    }
    if (d.media_type != kZtocMediaType) {
      return Invalid(
          fmt::format("layers[{}] has media type {} (want {})", i, d.media_type, kZtocMediaType));
    }
    if (d.size <= 0 || static_cast<uint64_t>(d.size) > max_ztoc_size) {
      return Invalid(fmt::format("layers[{}]: zTOC size {} (limit {})", i, d.size, max_ztoc_size));
    }
    ZtocRef r;
    r.ztoc = d;
    auto layer = Digest::Parse(d.Annotation(std::string(kAnnotationLayerDigest)));
    if (!layer.ok()) {
      return Invalid(fmt::format("layers[{}]: {}: {}", i, kAnnotationLayerDigest,
                                 format::Msg(layer.status())));
    }
    r.layer_digest = *layer;
    if (!seen.insert(r.layer_digest).second) {
      return Invalid(
          fmt::format("layers[{}]: layer {} indexed twice", i, r.layer_digest.ToString()));
    }
    r.layer_media_type = d.Annotation(std::string(kAnnotationLayerMediaType));
    const std::string span = d.Annotation(std::string(kAnnotationSpanSize));
    if (!span.empty()) {
      uint64_t v = 0;
      if (!absl::SimpleAtoi(span, &v)) {
        return Invalid(fmt::format("layers[{}]: span size \"{}\" is not a number", i, span));
      }
      r.span_size = v;
    }
    r.disable_xattrs = d.Annotation(std::string(kAnnotationDisableXattrs)) == "true";
    index.ztocs.push_back(std::move(r));
  }
  return index;
}

oci::Manifest MakeSociIndexManifest(const SociIndex& index) {
  oci::Manifest m;
  m.schema_version = 2;
  m.media_type = std::string(oci::kOciManifest);
  m.media_type_in_json = true;
  m.config.media_type = std::string(SociIndexArtifactType(index.version));
  m.config.digest = Digest::Of(kEmptyConfig);
  m.config.size = static_cast<int64_t>(kEmptyConfig.size());
  for (const ZtocRef& r : index.ztocs) {
    oci::Descriptor d = r.ztoc;
    d.media_type = std::string(kZtocMediaType);
    d.annotations[std::string(kAnnotationLayerMediaType)] = r.layer_media_type;
    d.annotations[std::string(kAnnotationLayerDigest)] = r.layer_digest.ToString();
    if (r.span_size) d.annotations[std::string(kAnnotationSpanSize)] = std::to_string(*r.span_size);
    if (r.disable_xattrs) d.annotations[std::string(kAnnotationDisableXattrs)] = "true";
    m.layers.push_back(std::move(d));
  }
  for (const oci::Descriptor& d : index.extra_blobs) m.layers.push_back(d);
  if (index.version == SociIndexVersion::kV1) m.subject = index.subject;
  if (!index.build_tool_identifier.empty()) {
    m.annotations[std::string(kAnnotationBuildTool)] = index.build_tool_identifier;
  }
  return m;
}

absl::StatusOr<std::optional<Digest>> SociIndexDigestOf(const oci::Manifest& image_manifest) {
  auto it = image_manifest.annotations.find(std::string(kAnnotationIndexDigest));
  if (it == image_manifest.annotations.end()) return std::optional<Digest>();
  auto d = Digest::Parse(it->second);
  if (!d.ok()) {
    return Invalid(fmt::format("{}: {}", kAnnotationIndexDigest, format::Msg(d.status())));
  }
  return std::optional<Digest>(*d);
}

}  // namespace lazypull::soci
