#include "fetcher/oci/media_types.h"

namespace lazypull::oci {

bool IsManifestType(std::string_view t) { return t == kOciManifest || t == kDockerManifest; }
bool IsIndexType(std::string_view t) { return t == kOciIndex || t == kDockerManifestList; }
bool IsConfigType(std::string_view t) { return t == kOciConfig || t == kDockerConfig; }

LayerCompression LayerCompressionOf(std::string_view t) {
  if (t == kOciLayer || t == kOciLayerNondistributable || t == kDockerLayer) {
    return LayerCompression::kNone;
  }
  if (t == kOciLayerGzip || t == kOciLayerNondistributableGzip || t == kDockerLayerGzip ||
      t == kDockerLayerForeignGzip) {
    return LayerCompression::kGzip;
  }
  if (t == kOciLayerZstd || t == kOciLayerNondistributableZstd || t == kDockerLayerZstd) {
    return LayerCompression::kZstd;
  }
  return LayerCompression::kUnknown;
}

bool IsLayerType(std::string_view t) { return LayerCompressionOf(t) != LayerCompression::kUnknown; }

}  // namespace lazypull::oci
