// Reference: an image reference parsed the way containerd and docker do:
// `[host[:port]/]repo/path[:tag][@sha256:...]`. A first component is a host only if it holds a
// '.' or ':' or is "localhost"; otherwise the host is docker.io and single-component
// repositories get the "library/" prefix.
#ifndef LAZYPULL_FETCHER_REGISTRY_REFERENCE_H_
#define LAZYPULL_FETCHER_REGISTRY_REFERENCE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "lazypull/digest.h"

namespace lazypull::registry {

// Value type; thread-compatible.
struct Reference {
  std::string host;        // "docker.io", "127.0.0.1:5000", "ghcr.io"
  std::string repository;  // "library/ubuntu"
  std::string tag;         // may be empty when a digest is given
  Digest digest;           // may be empty

  // What to put after /manifests/: the digest if set, else the tag ("latest" when neither).
  std::string ManifestReference() const;
  // Canonical full form: host/repository[:tag][@digest].
  std::string ToString() const;
  // host/repository
  std::string Name() const;
};

// Parses `text`. A missing tag and digest means tag "latest". Errors are InvalidArgument and
// quote the text: empty, upper-case repository, bad tag or digest, bad port.
absl::StatusOr<Reference> ParseReference(std::string_view text);

// True for hosts containerd treats as local (plain HTTP allowed): "localhost", "127.0.0.1",
// "::1", each with or without a port.
bool IsLocalhost(std::string_view host);

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_REFERENCE_H_
