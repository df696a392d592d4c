// Manifest: an OCI image manifest or Docker image manifest v2 schema 2 (same shape: config +
// layers). Parsing validates strictly; unknown top-level fields are kept in `extra` so a
// manifest the converter rewrites loses nothing.
#ifndef LAZYPULL_FETCHER_OCI_MANIFEST_H_
#define LAZYPULL_FETCHER_OCI_MANIFEST_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "nlohmann/json.hpp"

namespace lazypull::oci {

// Value type; thread-compatible.
struct Manifest {
  int schema_version = 2;
  // kOciManifest or kDockerManifest. OCI manifests may omit it in JSON; then it is
  // kOciManifest here and omitted again on serialisation (see `media_type_in_json`).
  std::string media_type;
  bool media_type_in_json = true;
  std::string artifact_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;
  nlohmann::json extra = nlohmann::json::object();
};

// Parses `bytes` as a manifest. `media_type_hint` (e.g. the HTTP Content-Type, may be empty) is
// used when the JSON has no mediaType; a JSON mediaType that disagrees with a non-empty manifest
// hint, an index media type, schemaVersion != 2, or an invalid config/layer descriptor is
// InvalidArgument with the offending field named.
absl::StatusOr<Manifest> ParseManifest(std::string_view bytes,
                                       std::string_view media_type_hint = {});
// Compact JSON. The digest of the manifest is the digest of exactly these bytes.
std::string SerializeManifest(const Manifest& m);

}  // namespace lazypull::oci

#endif  // LAZYPULL_FETCHER_OCI_MANIFEST_H_
