// Index: an OCI image index or Docker manifest list, and platform selection from it.
#ifndef LAZYPULL_FETCHER_OCI_INDEX_H_
#define LAZYPULL_FETCHER_OCI_INDEX_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/platform.h"
#include "nlohmann/json.hpp"

namespace lazypull::oci {

// Value type; thread-compatible.
struct Index {
  int schema_version = 2;
  std::string media_type;  // kOciIndex or kDockerManifestList
  bool media_type_in_json = true;
  std::string artifact_type;
  std::vector<Descriptor> manifests;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;
  nlohmann::json extra = nlohmann::json::object();
};

// Parses and validates an index (see ParseManifest for the rules on media types).
absl::StatusOr<Index> ParseIndex(std::string_view bytes, std::string_view media_type_hint = {});
std::string SerializeIndex(const Index& index);

// The first manifest in `index` whose platform matches `want` (PlatformMatches), preferring an
// exact variant match. Entries without a platform never match. Entries with an artifactType
// (artifacts, e.g. the SOCI index manifest a SOCI-enabled image lists under the image's own
// platform) are chosen only when no other entry matches; containerd relies on the image
// coming first instead. NotFound lists the platforms the index offers.
absl::StatusOr<Descriptor> SelectPlatformManifest(const Index& index, const Platform& want);

// Reads the top-level "mediaType" of a JSON document, or "" if absent. Used to tell manifests
// from indexes when the server's Content-Type is unhelpful. InvalidArgument if not JSON.
absl::StatusOr<std::string> SniffMediaType(std::string_view bytes);

}  // namespace lazypull::oci

#endif  // LAZYPULL_FETCHER_OCI_INDEX_H_
