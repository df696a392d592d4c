#include "fetcher/oci/index.h"

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "fetcher/oci/json_util.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"

namespace lazypull::oci {

absl::StatusOr<Index> ParseIndex(std::string_view bytes, std::string_view hint) {
  auto parsed = internal::ParseJson(bytes, "index");
  if (!parsed.ok()) return parsed.status();
  nlohmann::json& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError("index: not a JSON object");
  Index x;
  nlohmann::json extra = j;
  auto sv = j.find("schemaVersion");
  if (sv == j.end() || !sv->is_number_integer() || sv->get<int64_t>() != 2) {
    return absl::InvalidArgumentError("index: schemaVersion must be 2");
  }
  extra.erase("schemaVersion");
  if (auto it = j.find("mediaType"); it != j.end()) {
    if (!it->is_string()) return absl::InvalidArgumentError("index: mediaType not a string");
    x.media_type = it->get<std::string>();
    extra.erase("mediaType");
  } else {
    x.media_type_in_json = false;
    x.media_type = IsIndexType(hint) ? std::string(hint) : std::string(kOciIndex);
  }
  if (!IsIndexType(x.media_type)) {
    return absl::InvalidArgumentError(
        fmt::format("index: unsupported mediaType \"{}\"", x.media_type));
  }
  if (IsIndexType(hint) && hint != x.media_type) {
    return absl::InvalidArgumentError(fmt::format(
        "index: mediaType \"{}\" disagrees with content type \"{}\"", x.media_type, hint));
  }
  auto ms = j.find("manifests");
  if (ms == j.end() || !ms->is_array()) {
    return absl::InvalidArgumentError("index: manifests missing or not an array");
  }
  for (size_t i = 0; i < ms->size(); ++i) {
    auto d = DescriptorFromJson((*ms)[i], fmt::format("index.manifests[{}]", i));
    if (!d.ok()) return d.status();
    x.manifests.push_back(std::move(*d));
  }
  extra.erase("manifests");
  if (auto it = j.find("subject"); it != j.end()) {
    auto d = DescriptorFromJson(*it, "index.subject");
    if (!d.ok()) return d.status();
    x.subject = std::move(*d);
    extra.erase("subject");
  }
  if (auto it = j.find("annotations"); it != j.end()) {
    auto ann = StringMapFromJson(*it, "index.annotations");
    if (!ann.ok()) return ann.status();
    x.annotations = std::move(*ann);
    extra.erase("annotations");
  }
  if (auto it = j.find("artifactType"); it != j.end()) {
    if (!it->is_string()) return absl::InvalidArgumentError("index: artifactType not a string");
    x.artifact_type = it->get<std::string>();
    extra.erase("artifactType");
  }
  x.extra = std::move(extra);
  return x;
}

std::string SerializeIndex(const Index& x) {
  nlohmann::json j = x.extra.is_object() ? x.extra : nlohmann::json::object();
  j["schemaVersion"] = x.schema_version;
  if (x.media_type_in_json || x.media_type == kDockerManifestList) j["mediaType"] = x.media_type;
  if (!x.artifact_type.empty()) j["artifactType"] = x.artifact_type;
  j["manifests"] = nlohmann::json::array();
  for (const auto& d : x.manifests) j["manifests"].push_back(DescriptorToJson(d));
  if (x.subject) j["subject"] = DescriptorToJson(*x.subject);
  if (!x.annotations.empty()) j["annotations"] = x.annotations;
  return j.dump();
}

absl::StatusOr<Descriptor> SelectPlatformManifest(const Index& index, const Platform& want) {
  Platform nwant = NormalizePlatform(want);
  for (bool artifacts : {false, true}) {
    const Descriptor* loose = nullptr;
    for (const auto& d : index.manifests) {
      if (!d.platform || d.artifact_type.empty() == artifacts) continue;
      if (!PlatformMatches(nwant, *d.platform)) continue;
      if (NormalizePlatform(*d.platform).variant == nwant.variant) return d;
      if (loose == nullptr) loose = &d;
    }
    if (loose != nullptr) return *loose;
  }
  std::vector<std::string> offered;
  for (const auto& d : index.manifests) {
    if (d.platform) offered.push_back(d.platform->ToString());
  }
  return absl::NotFoundError(fmt::format("no manifest for platform {} in index (offers: {})",
                                         nwant.ToString(), absl::StrJoin(offered, ", ")));
}

absl::StatusOr<std::string> SniffMediaType(std::string_view bytes) {
  auto parsed = internal::ParseJson(bytes, "manifest");
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) return absl::InvalidArgumentError("manifest: not a JSON object");
  auto it = parsed->find("mediaType");
  if (it != parsed->end() && it->is_string()) return it->get<std::string>();
  if (parsed->contains("manifests")) return std::string(kOciIndex);
  if (parsed->contains("layers")) return std::string(kOciManifest);
  return std::string();
}

}  // namespace lazypull::oci
