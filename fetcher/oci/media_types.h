// OCI and Docker media types that lazypull reads and writes.
#ifndef LAZYPULL_FETCHER_OCI_MEDIA_TYPES_H_
#define LAZYPULL_FETCHER_OCI_MEDIA_TYPES_H_

#include <string_view>

namespace lazypull::oci {

// OCI image spec v1.
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciLayerNondistributable =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kOciLayerNondistributableGzip =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
inline constexpr std::string_view kOciLayerNondistributableZstd =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

// Docker image manifest v2 schema 2.
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerForeignGzip =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
// Not official, but written by some tools (e.g. containerd for zstd docker images).
inline constexpr std::string_view kDockerLayerZstd =
    "application/vnd.docker.image.rootfs.diff.tar.zstd";
inline constexpr std::string_view kDockerLayer = "application/vnd.docker.image.rootfs.diff.tar";

// Accept header value for manifest GET/HEAD: every manifest and index type we can parse.
inline constexpr std::string_view kManifestAcceptHeader =
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

enum class LayerCompression { kNone, kGzip, kZstd, kUnknown };

bool IsManifestType(std::string_view media_type);  // OCI or Docker image manifest
bool IsIndexType(std::string_view media_type);     // OCI index or Docker manifest list
bool IsConfigType(std::string_view media_type);
bool IsLayerType(std::string_view media_type);
// Compression of a layer media type; kUnknown for non-layer types.
LayerCompression LayerCompressionOf(std::string_view media_type);

}  // namespace lazypull::oci

#endif  // LAZYPULL_FETCHER_OCI_MEDIA_TYPES_H_
