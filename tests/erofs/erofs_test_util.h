// Helpers of the EROFS tests: a layer exercising every inode kind the writer handles (built as a
// real eStargz or zstd:chunked blob and indexed by the real readers), the lazy blob and tar data
// devices materialized locally, and exact comparisons of an image (as CheckErofsImage reads it)
// or of a mounted tree with the LayerIndex.
#ifndef LAZYPULL_TESTS_EROFS_EROFS_TEST_UTIL_H_
#define LAZYPULL_TESTS_EROFS_EROFS_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"
#include "mount/erofs/device_layout.h"
#include "mount/erofs/image_checker.h"
#include "tests/format/test_blob_builder.h"

namespace lazypull::erofs_testing {

// Dirs (nested, one with 400 entries spanning blocks), empty/small/multi-chunk files, a file
// with zero chunks (holes in zstd:chunked), short and long symlinks, a hardlink, devices, a
// fifo, a whiteout, an opaque dir, user/trusted/security xattrs (some shared), uid/gid above
// 65535 and nanosecond mtimes.
std::vector<format::testing::TestEntry> RichEntries();

struct TestLayer {
  format::testing::BuiltBlob built;
  std::shared_ptr<const format::LayerIndex> index;
  std::shared_ptr<BlobReader> blob;
};
// Builds the blob (zstd:chunked with 64 KiB chunks, or eStargz with 64 KiB chunks) and its index.
absl::StatusOr<TestLayer> MakeTestLayer(const std::vector<format::testing::TestEntry>& entries,
                                        bool zstd_chunked);

// A zstd:chunked layer holding "var/log/lastlog": 64 KiB of data (`head`), `hole` zero bytes
// (ONE "zeros" chunk, its frame a run of zstd RLE blocks, so the blob stays small and honest:
// it decompresses to the real tar) and 64 KiB of data (`tail`), like a node's lastlog; plus
// "etc/hello". built.tar holds the tar with the hole cut out (head frames up to the hole, then
// the rest). No chunk digest of the whole file (it would take minutes to hash).
struct SparseLayer {
  TestLayer layer;
  std::string head, tail;
  uint64_t file_size = 0;
  std::string tar_before_hole;  // the tar bytes before the zeros chunk
  std::string tar_after_hole;   // the tar bytes after it
};
absl::StatusOr<SparseLayer> MakeSparseZstdChunkedLayer(uint64_t hole);

// A zstd frame of `n` zero bytes made of RLE blocks (4 bytes per 128 KiB).
std::string ZstdZerosFrame(uint64_t n);

// The whole content of regular file `ino`.
absl::StatusOr<std::string> FileContent(const TestLayer& layer, format::Ino ino);

// The lazy blob's bytes, assembled from the files' contents.
absl::StatusOr<std::string> MaterializeBlob(const TestLayer& layer,
                                            const mount::erofs::BlobLayout& layout);

// Differences between the checked image and the index (metadata, chunk maps equal to
// `device`, and file bytes read through the chunk maps from `device_bytes`). Empty = equal.
std::vector<std::string> CompareImageWithIndex(const mount::erofs::CheckedImage& image,
                                               const TestLayer& layer,
                                               const mount::erofs::DeviceLayout& device,
                                               const std::string& device_bytes);

// Differences between a mounted tree at `dir` and the index: types, modes, ids, sizes, nlink,
// mtimes (ns), rdev, symlink targets, every xattr, and every byte. Empty = equal.
std::vector<std::string> CompareMountWithIndex(const std::string& dir, const TestLayer& layer);

// Offsets of every regular file's payload in layer.built.tar (by ino - 1; UINT64_MAX if none).
absl::StatusOr<std::vector<uint64_t>> TarPayloadOffsets(const TestLayer& layer);

// Bound loop devices attached with owner tag `owner` (mount/erofs/loop_device.h).
size_t OwnedLoopDevices(const std::string& owner);
// Bound loop devices whose /sys/block/loop*/loop/backing_file lies under `dir`.
size_t LoopDevicesBackedUnder(const std::string& dir);

}  // namespace lazypull::erofs_testing

#endif  // LAZYPULL_TESTS_EROFS_EROFS_TEST_UTIL_H_
