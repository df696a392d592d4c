#include "fetcher/oci/image_config.h"

#include "absl/status/status.h"
#include "fetcher/oci/json_util.h"
#include "fmt/format.h"

namespace lazypull::oci {

absl::StatusOr<ImageConfig> ImageConfig::Parse(std::string_view bytes) {
  auto parsed = internal::ParseJson(bytes, "image config");
  if (!parsed.ok()) return parsed.status();
  ImageConfig c;
  c.json_ = std::move(*parsed);
  const nlohmann::json& j = c.json_;
  if (!j.is_object()) return absl::InvalidArgumentError("image config: not a JSON object");
  for (const char* key : {"architecture", "os"}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) {
      return absl::InvalidArgumentError(
          fmt::format("image config: \"{}\" missing or not a string", key));
    }
  }
  auto rootfs = j.find("rootfs");
  if (rootfs == j.end() || !rootfs->is_object()) {
    return absl::InvalidArgumentError("image config: rootfs missing or not an object");
  }
  auto type = rootfs->find("type");
  if (type == rootfs->end() || !type->is_string() || type->get<std::string>() != "layers") {
    return absl::InvalidArgumentError("image config: rootfs.type must be \"layers\"");
  }
  auto ids = rootfs->find("diff_ids");
  if (ids == rootfs->end() || !ids->is_array()) {
    return absl::InvalidArgumentError("image config: rootfs.diff_ids missing or not an array");
  }
  for (size_t i = 0; i < ids->size(); ++i) {
    const auto& v = (*ids)[i];
    if (!v.is_string()) {
      return absl::InvalidArgumentError(
          fmt::format("image config: rootfs.diff_ids[{}] not a string", i));
    }
    auto d = Digest::Parse(v.get<std::string>());
    if (!d.ok()) {
      return absl::InvalidArgumentError(fmt::format("image config: rootfs.diff_ids[{}]: {}", i,
                                                    std::string(d.status().message())));
    }
    c.diff_ids_.push_back(*d);
  }
  return c;
}

Platform ImageConfig::platform() const {
  Platform p;
  p.os = json_.value("os", "");
  p.architecture = json_.value("architecture", "");
  p.variant = json_.value("variant", "");
  p.os_version = json_.value("os.version", "");
  return p;
}

void ImageConfig::set_diff_ids(std::vector<Digest> ids) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& d : ids) arr.push_back(d.ToString());
  json_["rootfs"]["diff_ids"] = std::move(arr);
  diff_ids_ = std::move(ids);
}

std::string ImageConfig::Serialize() const { return json_.dump(); }

}  // namespace lazypull::oci
