// Helpers of the remote-snapshot tests: images built and converted for real (umoci, skopeo,
// `lazypull convert`) and pushed to a real docker-registry, the labels containerd's clients
// send, and an exact comparison of a mounted tree with the image's unpacked rootfs.
#ifndef LAZYPULL_TESTS_REMOTE_REMOTE_TEST_UTIL_H_
#define LAZYPULL_TESTS_REMOTE_REMOTE_TEST_UTIL_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/registry/registry_client.h"
#include "tests/harness/image_builder.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {

// The standard multi-layer test image: busybox; a layer with a 1 MiB random file, small files
// with various modes/owners, symlinks, a hardlink; a layer that deletes files and a directory
// from the layer below and adds more.
LayerChanges BigFilesLayer();
LayerChanges DeletionsLayer();
// Deterministic pseudo-random bytes.
std::string RandomBytes(size_t n, uint32_t seed);

// The images of the remote-snapshot tests, built once per test binary in a private registry:
// a 4-layer image — busybox; BigFilesLayer; DeletionsLayer; a hand-made layer (Python tarfile,
// PAX) with an opaque dir, user xattrs on a file and a dir, and a sparse file — pushed as
// src:v1 (gzip), converted by `lazypull convert` to esgz:v1 and zc:v1, pushed by skopeo 1.9 as
// skopeo-zc:v1 (zstd:chunked), and unpacked by umoci into the expected rootfs.
struct RemoteTestImages {
  TempDir dir{"lprem"};
  std::unique_ptr<RegistryProcess> registry;
  BuiltImage src;
  std::string rootfs;  // the image unpacked by umoci: the expected tree
  absl::Status status;
};
absl::Status BuildRemoteTestImages(RemoteTestImages& im);

// A one-layer gzip image (OCI layout at <work_dir>/<name>, tag v1) holding big/huge.bin:
// `size` bytes of zeros except HugeBytes' markers at the start, across the 4 GiB mark (when
// the file reaches it) and at the end. The tar (with gigabytes of literal zeros) is streamed
// through pigz, so building costs seconds, not disk.
inline constexpr uint64_t kHugeSize = (4ull << 30) + 4096;
absl::StatusOr<std::string> BuildHugeSparseLayout(const std::string& work_dir,
                                                  uint64_t size = kHugeSize,
                                                  const std::string& name = "huge-layout");
// The expected bytes of a `size`-byte big/huge.bin at [offset, offset + length).
std::string HugeBytes(uint64_t offset, size_t length, uint64_t size = kHugeSize);

// An image as pushed to the registry.
struct PushedImage {
  std::string ref;  // "127.0.0.1:PORT/repo:tag"
  registry::ResolvedImage resolved;
};

// Resolves `ref` with a plain-http RegistryClient.
absl::StatusOr<PushedImage> ResolvePushed(const std::string& ref);

// `lazypull convert --format FORMAT --plain-http SRC DST` (FORMAT estargz or zstd:chunked).
absl::Status LazypullConvert(const std::string& format, const std::string& src,
                             const std::string& dst, const std::string& extra_flags = "");

// Pushes an OCI layout's tag as zstd:chunked with skopeo 1.9 (decompressed copy first, so
// skopeo really recompresses; see shared/e2e-notes.md).
absl::Status PushZstdChunkedWithSkopeo(const std::string& work_dir, const std::string& layout,
                                       const std::string& tag, const std::string& dst_ref);

// Prepare labels for layer `i` of `image` as `ctr-remote images rpull` sends them (stargz set,
// plus the layer's containerd.io/snapshot/* annotations), targeting `target`.
std::map<std::string, std::string> StargzLabels(const PushedImage& image, size_t i,
                                                const std::string& target);
// The same layer with CRI's label set.
std::map<std::string, std::string> CriLabels(const PushedImage& image, size_t i,
                                             const std::string& target);

// Writes an OCI layout at `layout` (tag v1) of a one-layer linux/amd64 image whose layer is the
// gzip `blob` (media type tar+gzip, with `annotations`); the diff_id is computed from it unless
// `diff_id` names another (an image whose config lies). For layers a test crafts byte by byte
// (hostile TOCs).
absl::Status WriteOneLayerLayout(const std::string& layout, const std::string& blob,
                                 const std::map<std::string, std::string>& annotations,
                                 const std::optional<Digest>& diff_id = std::nullopt);

// `umoci unpack` of layout:tag into <dir>/bundle; returns the rootfs path.
absl::StatusOr<std::string> UnpackRootfs(const std::string& layout, const std::string& tag,
                                         const std::string& dir);

// Compares two trees: entry set, type, mode, uid, gid, size, bytes, mtime (seconds),
// symlink targets, device numbers, user.* xattrs, and nlink of regular files. Returns one
// line per difference (empty = equal). `ignore` lists top-level names to skip.
std::vector<std::string> CompareTrees(const std::string& expected, const std::string& actual,
                                      const std::vector<std::string>& ignore = {});

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_REMOTE_REMOTE_TEST_UTIL_H_
