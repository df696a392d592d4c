// ImageConfig: an image configuration blob (OCI config / Docker container image v1), kept as
// raw JSON so every field this type does not interpret survives a rewrite (e.g. the converter
// replacing rootfs.diff_ids).
#ifndef LAZYPULL_FETCHER_OCI_IMAGE_CONFIG_H_
#define LAZYPULL_FETCHER_OCI_IMAGE_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/platform.h"
#include "lazypull/digest.h"
#include "nlohmann/json.hpp"

namespace lazypull::oci {

// Value type; thread-compatible.
class ImageConfig {
 public:
  // Validates: a JSON object with "architecture" and "os" strings, and "rootfs" of
  // type "layers" with a "diff_ids" array of valid digests. InvalidArgument otherwise.
  static absl::StatusOr<ImageConfig> Parse(std::string_view bytes);

  Platform platform() const;
  const std::vector<Digest>& diff_ids() const { return diff_ids_; }
  // Replaces rootfs.diff_ids; every other field is untouched.
  void set_diff_ids(std::vector<Digest> ids);
  // The whole document (read-only), e.g. for "config.Env".
  const nlohmann::json& json() const { return json_; }
  nlohmann::json& mutable_json() { return json_; }

  // Compact JSON of the current document.
  std::string Serialize() const;

 private:
  nlohmann::json json_;
  std::vector<Digest> diff_ids_;
};

}  // namespace lazypull::oci

#endif  // LAZYPULL_FETCHER_OCI_IMAGE_CONFIG_H_
