// libFuzzer target: the OCI documents a registry (or an OCI layout) hands us: manifest, index,
// image config, media-type sniffing and platform selection. A document that parses must
// serialise to bytes that parse again to the same serialisation (the converter rewrites
// manifests and configs and relies on losing nothing).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/oci/platform.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::oci;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)SniffMediaType(bytes);
  for (std::string_view hint : {std::string_view(), kOciManifest, kDockerManifest}) {
    auto m = ParseManifest(bytes, hint);
    if (!m.ok()) continue;
    std::string out = SerializeManifest(*m);
    auto again = ParseManifest(out, hint);
    if (!again.ok() || SerializeManifest(*again) != out) abort();
  }
  for (std::string_view hint : {std::string_view(), kOciIndex, kDockerManifestList}) {
    auto index = ParseIndex(bytes, hint);
    if (!index.ok()) continue;
    std::string out = SerializeIndex(*index);
    auto again = ParseIndex(out, hint);
    if (!again.ok() || SerializeIndex(*again) != out) abort();
    Platform want;
    want.os = "linux";
    want.architecture = "amd64";
    (void)SelectPlatformManifest(*index, want);
  }
  auto config = ImageConfig::Parse(bytes);
  if (config.ok()) {
    (void)config->platform();
    std::string out = config->Serialize();
    auto again = ImageConfig::Parse(out);
    if (!again.ok() || again->Serialize() != out || again->diff_ids() != config->diff_ids()) {
      abort();
    }
  }
  return 0;
}
