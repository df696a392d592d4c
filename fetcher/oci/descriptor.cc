#include "fetcher/oci/descriptor.h"

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::oci {

std::string Descriptor::Annotation(const std::string& key) const {
  auto it = annotations.find(key);
  return it == annotations.end() ? std::string() : it->second;
}

absl::StatusOr<std::map<std::string, std::string>> StringMapFromJson(const nlohmann::json& j,
                                                                     const std::string& where) {
  std::map<std::string, std::string> out;
  if (j.is_null()) return out;
  if (!j.is_object()) return absl::InvalidArgumentError(where + ": not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: value of \"{}\" is not a string", where, it.key()));
    }
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

absl::StatusOr<Descriptor> DescriptorFromJson(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) return absl::InvalidArgumentError(where + ": not a JSON object");
  Descriptor d;
  nlohmann::json extra = j;
  auto mt = j.find("mediaType");
  if (mt == j.end() || !mt->is_string() || mt->get<std::string>().empty()) {
    return absl::InvalidArgumentError(where + ": mediaType missing or not a non-empty string");
  }
  d.media_type = mt->get<std::string>();
  extra.erase("mediaType");
  auto dg = j.find("digest");
  if (dg == j.end() || !dg->is_string()) {
    return absl::InvalidArgumentError(where + ": digest missing or not a string");
  }
  auto digest = Digest::Parse(dg->get<std::string>());
  if (!digest.ok())
    return absl::InvalidArgumentError(where + ": " + std::string(digest.status().message()));
  d.digest = *digest;
  extra.erase("digest");
  auto sz = j.find("size");
  if (sz == j.end() || !sz->is_number_integer() || sz->get<int64_t>() < 0) {
    return absl::InvalidArgumentError(where + ": size missing or not a non-negative integer");
  }
  d.size = sz->get<int64_t>();
  extra.erase("size");
  if (auto it = j.find("annotations"); it != j.end()) {
    auto ann = StringMapFromJson(*it, where + ".annotations");
    if (!ann.ok()) return ann.status();
    d.annotations = std::move(*ann);
    extra.erase("annotations");
  }
  if (auto it = j.find("urls"); it != j.end()) {
    if (!it->is_array()) return absl::InvalidArgumentError(where + ".urls: not an array");
    for (const auto& u : *it) {
      if (!u.is_string()) return absl::InvalidArgumentError(where + ".urls: entry not a string");
      d.urls.push_back(u.get<std::string>());
    }
    extra.erase("urls");
  }
  if (auto it = j.find("platform"); it != j.end()) {
    auto p = PlatformFromJson(*it);
    if (!p.ok())
      return absl::InvalidArgumentError(where + ": " + std::string(p.status().message()));
    d.platform = std::move(*p);
    extra.erase("platform");
  }
  if (auto it = j.find("artifactType"); it != j.end()) {
    if (!it->is_string()) return absl::InvalidArgumentError(where + ".artifactType: not a string");
    d.artifact_type = it->get<std::string>();
    extra.erase("artifactType");
  }
  d.extra = std::move(extra);
  return d;
}

nlohmann::json DescriptorToJson(const Descriptor& d) {
  nlohmann::json j = d.extra.is_object() ? d.extra : nlohmann::json::object();
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest.ToString();
  j["size"] = d.size;
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (!d.urls.empty()) j["urls"] = d.urls;
  if (d.platform) j["platform"] = PlatformToJson(*d.platform);
  if (!d.artifact_type.empty()) j["artifactType"] = d.artifact_type;
  return j;
}

}  // namespace lazypull::oci
