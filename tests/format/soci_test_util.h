// Shared by the SOCI tests: a real gzip tar layer made with GNU tar and gzip from files of the
// build machine, and helpers to inflate spans of a zTOC.
#ifndef LAZYPULL_TESTS_FORMAT_SOCI_TEST_UTIL_H_
#define LAZYPULL_TESTS_FORMAT_SOCI_TEST_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/ztoc.h"
#include "tests/harness/test_env.h"

namespace lazypull::soci::testing {

struct SampleLayer {
  std::string src_dir;     // the files that went into the tar
  std::string tar;         // the uncompressed tar
  std::string gzip;        // `gzip -9` of it from stdin (10-byte header)
  std::string gzip_named;  // `gzip` of the file (header with FNAME)
};

// Builds a pax tar of headers and a binary from /usr (a few MB), a symlink, a hardlink, an
// empty file, a long name and a user xattr when the file system takes one, under `dir`.
absl::StatusOr<SampleLayer> MakeSampleLayer(const lazypull::testing::TempDir& dir);

// Inflates span `i` of `ztoc` from `blob` (the whole compressed layer) after checking its
// digest.
absl::StatusOr<std::string> ReadSpan(const Ztoc& ztoc, std::string_view blob, size_t i);

// Uncompressed bytes [offset, offset + length) through the spans covering them
// (SlicesForRange).
absl::StatusOr<std::string> ReadUncompressed(const Ztoc& ztoc, std::string_view blob,
                                             uint64_t offset, uint64_t length);

}  // namespace lazypull::soci::testing

#endif  // LAZYPULL_TESTS_FORMAT_SOCI_TEST_UTIL_H_
