// Minimal eStargz / zstd:chunked blob writers for reader tests and fuzz seeds. They follow the
// reference layouts (member/frame per payload chunk, TOC/manifest at the end, footers) but are
// deliberately simple; the real writers live in fetcher/convert.
#ifndef LAZYPULL_TESTS_FORMAT_TEST_BLOB_BUILDER_H_
#define LAZYPULL_TESTS_FORMAT_TEST_BLOB_BUILDER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lazypull/digest.h"
#include "nlohmann/json.hpp"

namespace lazypull::format::testing {

struct TestEntry {
  std::string name;    // as written in the tar / TOC
  char type = '0';     // tar typeflag: '0' reg, '1' hardlink, '2' symlink, '3' char, '4' block,
                       // '5' dir, '6' fifo
  std::string data{};  // regular file content
  std::string link{};  // symlink/hardlink target
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 1700000000;
  std::string modtime{};  // TOC modtime override (RFC 3339); default from mtime
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs{};
};

struct BuiltBlob {
  std::string blob;
  std::string toc_json;  // uncompressed TOC / manifest
  Digest toc_digest;     // eStargz: sha256(TOC JSON); zstd:chunked: sha256(compressed manifest)
  std::map<std::string, std::string> annotations;
  std::string tar;  // the uncompressed tar stream the blob decompresses to
};

// `n` pseudo-random bytes from `seed` (incompressible file content, reproducible).
std::string Pattern(size_t n, uint32_t seed);
// A small layer with one entry of every kind the formats carry: directories, a file with
// owner and xattrs, a 300,000-byte file (several chunks), an empty file, a hardlink, a symlink,
// a character device, a FIFO, a whiteout, an opaque-directory marker and a non-ASCII name.
std::vector<TestEntry> SampleLayerEntries();

struct EstargzBuildOptions {
  uint64_t chunk_size = 4 << 20;
  bool legacy_footer = false;
  // Adds `.prefetch.landmark` after the first `prioritized` entries (-1: none, and
  // `.no.prefetch.landmark` first instead).
  int prioritized = -1;
  // Lets a test corrupt the TOC JSON before it is written.
  std::function<void(nlohmann::json&)> mutate_toc{};
};
BuiltBlob BuildEstargz(const std::vector<TestEntry>& entries, const EstargzBuildOptions& o = {});

struct ZstdChunkedBuildOptions {
  uint64_t chunk_size = 64 << 10;
  bool legacy = false;  // skopeo 1.9 layout: 40-byte footer, io.containers.* annotations
  std::function<void(nlohmann::json&)> mutate_toc{};
};
BuiltBlob BuildZstdChunked(const std::vector<TestEntry>& entries,
                           const ZstdChunkedBuildOptions& o = {});

// A ustar header block (plus PAX header for xattrs) for `e` with payload size `size`.
std::string TarHeader(const TestEntry& e, uint64_t size);

}  // namespace lazypull::format::testing

#endif  // LAZYPULL_TESTS_FORMAT_TEST_BLOB_BUILDER_H_

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"

namespace lazypull::format::testing {
// Reads every chunk of regular file `ino` through `blob` + DecodeChunk.
absl::StatusOr<std::string> ReadFileBytes(const LayerIndex& index, BlobReader& blob, Ino ino);
}  // namespace lazypull::format::testing
