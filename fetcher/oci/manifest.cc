#include "fetcher/oci/manifest.h"

#include "absl/status/status.h"
#include "fetcher/oci/json_util.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"

namespace lazypull::oci {

absl::StatusOr<Manifest> ParseManifest(std::string_view bytes, std::string_view hint) {
  auto parsed = internal::ParseJson(bytes, "manifest");
  if (!parsed.ok()) return parsed.status();
  nlohmann::json& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError("manifest: not a JSON object");
  Manifest m;
  nlohmann::json extra = j;
  auto sv = j.find("schemaVersion");
  if (sv == j.end() || !sv->is_number_integer() || sv->get<int64_t>() != 2) {
    return absl::InvalidArgumentError("manifest: schemaVersion must be 2");
  }
  extra.erase("schemaVersion");
  if (auto it = j.find("mediaType"); it != j.end()) {
    if (!it->is_string()) return absl::InvalidArgumentError("manifest: mediaType not a string");
    m.media_type = it->get<std::string>();
    extra.erase("mediaType");
  } else {
    m.media_type_in_json = false;
    m.media_type = IsManifestType(hint) ? std::string(hint) : std::string(kOciManifest);
  }
  if (!IsManifestType(m.media_type)) {
    return absl::InvalidArgumentError(
        fmt::format("manifest: unsupported mediaType \"{}\"", m.media_type));
  }
  if (IsManifestType(hint) && hint != m.media_type) {
    return absl::InvalidArgumentError(fmt::format(
        "manifest: mediaType \"{}\" disagrees with content type \"{}\"", m.media_type, hint));
  }
  if (j.contains("manifests")) {
    return absl::InvalidArgumentError("manifest: has \"manifests\" (an index, not a manifest)");
  }
  auto cfg = j.find("config");
  if (cfg == j.end()) return absl::InvalidArgumentError("manifest: config missing");
  auto config = DescriptorFromJson(*cfg, "manifest.config");
  if (!config.ok()) return config.status();
  m.config = std::move(*config);
  extra.erase("config");
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) {
    return absl::InvalidArgumentError("manifest: layers missing or not an array");
  }
  for (size_t i = 0; i < layers->size(); ++i) {
    auto d = DescriptorFromJson((*layers)[i], fmt::format("manifest.layers[{}]", i));
    if (!d.ok()) return d.status();
    m.layers.push_back(std::move(*d));
  }
  extra.erase("layers");
  if (auto it = j.find("subject"); it != j.end()) {
    auto d = DescriptorFromJson(*it, "manifest.subject");
    if (!d.ok()) return d.status();
    m.subject = std::move(*d);
    extra.erase("subject");
  }
  if (auto it = j.find("annotations"); it != j.end()) {
    auto ann = StringMapFromJson(*it, "manifest.annotations");
    if (!ann.ok()) return ann.status();
    m.annotations = std::move(*ann);
    extra.erase("annotations");
  }
  if (auto it = j.find("artifactType"); it != j.end()) {
    if (!it->is_string()) return absl::InvalidArgumentError("manifest: artifactType not a string");
    m.artifact_type = it->get<std::string>();
    extra.erase("artifactType");
  }
  m.extra = std::move(extra);
  return m;
}

std::string SerializeManifest(const Manifest& m) {
  nlohmann::json j = m.extra.is_object() ? m.extra : nlohmann::json::object();
  j["schemaVersion"] = m.schema_version;
  if (m.media_type_in_json || m.media_type == kDockerManifest) j["mediaType"] = m.media_type;
  if (!m.artifact_type.empty()) j["artifactType"] = m.artifact_type;
  j["config"] = DescriptorToJson(m.config);
  j["layers"] = nlohmann::json::array();
  for (const auto& l : m.layers) j["layers"].push_back(DescriptorToJson(l));
  if (m.subject) j["subject"] = DescriptorToJson(*m.subject);
  if (!m.annotations.empty()) j["annotations"] = m.annotations;
  return j.dump();
}

}  // namespace lazypull::oci
