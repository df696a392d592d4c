// Descriptor: a typed, sized, content-addressed reference to a blob (OCI image spec
// descriptor). Used for configs, layers and manifests inside an index.
#ifndef LAZYPULL_FETCHER_OCI_DESCRIPTOR_H_
#define LAZYPULL_FETCHER_OCI_DESCRIPTOR_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/platform.h"
#include "lazypull/digest.h"
#include "nlohmann/json.hpp"

namespace lazypull::oci {

// Value type; thread-compatible.
struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::vector<std::string> urls;
  std::optional<Platform> platform;
  std::string artifact_type;
  // Fields this type does not know (e.g. "data"), kept so a re-serialised descriptor loses
  // nothing. Always a JSON object (possibly empty).
  nlohmann::json extra = nlohmann::json::object();

  // The annotation value or "" when absent.
  std::string Annotation(const std::string& key) const;
};

// Parses and validates a descriptor object: mediaType must be a non-empty string, digest a
// valid sha256 digest, size a non-negative integer, annotations a string→string object, urls
// an array of strings. Errors are InvalidArgument and name `where` (e.g. "layers[2]").
absl::StatusOr<Descriptor> DescriptorFromJson(const nlohmann::json& j,
                                              const std::string& where = "descriptor");
nlohmann::json DescriptorToJson(const Descriptor& d);

// Parses a JSON string→string object (annotations, labels). InvalidArgument otherwise.
absl::StatusOr<std::map<std::string, std::string>> StringMapFromJson(const nlohmann::json& j,
                                                                     const std::string& where);

}  // namespace lazypull::oci

#endif  // LAZYPULL_FETCHER_OCI_DESCRIPTOR_H_
