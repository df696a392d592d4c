// Helpers for registry tests: synthetic images pushed with RegistryClient's push API.
#ifndef LAZYPULL_TESTS_REGISTRY_REGISTRY_TEST_UTIL_H_
#define LAZYPULL_TESTS_REGISTRY_REGISTRY_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/platform.h"
#include "fetcher/registry/registry_client.h"

namespace lazypull::testing {

// Deterministic pseudo-random bytes.
std::string RandomBytes(size_t n, uint32_t seed);

struct PushedImage {
  registry::Reference ref;   // with tag
  oci::Descriptor manifest;  // the image manifest
  oci::Descriptor config;
  std::vector<oci::Descriptor> layers;
  std::vector<std::string> layer_bytes;
};

// Pushes an image with the given layer contents (gzip media type; bytes are opaque) for
// `platform`, tagged `ref.tag`.
absl::StatusOr<PushedImage> PushImage(registry::RegistryClient& client,
                                      const registry::Reference& ref,
                                      const std::vector<std::string>& layers,
                                      const oci::Platform& platform = oci::HostPlatform());

// A RegistryConfig for tests: no certs.d dir, fast retries.
registry::RegistryConfig TestConfig(const std::string& certs_dir = "");

std::unique_ptr<registry::RegistryClient> NewClient(const registry::RegistryConfig& config);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_REGISTRY_REGISTRY_TEST_UTIL_H_
