#include "tests/registry/registry_test_util.h"

#include <random>

#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "nlohmann/json.hpp"

namespace lazypull::testing {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = rng();
    for (size_t k = 0; k < 4 && i + k < n; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

registry::RegistryConfig TestConfig(const std::string& certs_dir) {
  registry::RegistryConfig c;
  c.config_path = certs_dir;
  c.initial_backoff = std::chrono::milliseconds(20);
  c.max_backoff = std::chrono::milliseconds(200);
  c.max_retries = 4;
  c.total_timeout = std::chrono::milliseconds(30000);
  c.request_timeout = std::chrono::milliseconds(10000);
  c.connect_timeout = std::chrono::milliseconds(2000);
  return c;
}

std::unique_ptr<registry::RegistryClient> NewClient(const registry::RegistryConfig& config) {
  return std::make_unique<registry::RegistryClient>(config, registry::NewCurlTransport());
}

absl::StatusOr<PushedImage> PushImage(registry::RegistryClient& client,
                                      const registry::Reference& ref,
                                      const std::vector<std::string>& layers,
                                      const oci::Platform& platform) {
  PushedImage img;
  img.ref = ref;
  nlohmann::json diff_ids = nlohmann::json::array();
  for (const auto& l : layers) {
    oci::Descriptor d;
    d.media_type = std::string(oci::kOciLayerGzip);
    d.digest = Digest::Of(l);
    d.size = static_cast<int64_t>(l.size());
    if (auto st = client.PushBlob(ref, d, l); !st.ok()) return st;
    img.layers.push_back(d);
    img.layer_bytes.push_back(l);
    diff_ids.push_back(d.digest.ToString());
  }
  nlohmann::json config = {{"architecture", platform.architecture},
                           {"os", platform.os},
                           {"config", {{"Env", {"PATH=/bin"}}}},
                           {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  if (!platform.variant.empty()) config["variant"] = platform.variant;
  std::string config_bytes = config.dump();
  img.config.media_type = std::string(oci::kOciConfig);
  img.config.digest = Digest::Of(config_bytes);
  img.config.size = static_cast<int64_t>(config_bytes.size());
  if (auto st = client.PushBlob(ref, img.config, config_bytes); !st.ok()) return st;
  oci::Manifest m;
  m.media_type = std::string(oci::kOciManifest);
  m.config = img.config;
  m.layers = img.layers;
  std::string bytes = oci::SerializeManifest(m);
  auto digest = client.PushManifest(ref, m.media_type, bytes);
  if (!digest.ok()) return digest.status();
  img.manifest.media_type = m.media_type;
  img.manifest.digest = *digest;
  img.manifest.size = static_cast<int64_t>(bytes.size());
  img.manifest.platform = platform;
  return img;
}

}  // namespace lazypull::testing
