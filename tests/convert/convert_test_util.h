// Helpers for the converter tests: filesystem/index snapshots to compare, the reference Go
// eStargz tool, and a source tree with every kind of tar entry.
#ifndef LAZYPULL_TESTS_CONVERT_CONVERT_TEST_UTIL_H_
#define LAZYPULL_TESTS_CONVERT_CONVERT_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"

namespace lazypull::testing {

// What a test compares for one path.
struct FileInfo {
  uint32_t mode = 0;  // full st_mode
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;  // regular files and symlinks only (0 for others)
  int64_t mtime_sec = 0;
  uint32_t dev_major = 0, dev_minor = 0;
  std::string link_target;
  std::map<std::string, std::string> xattrs;
  std::string content_sha256;  // regular files
  std::string hardlink_group;  // smallest path sharing the inode (regular files)
  friend bool operator==(const FileInfo&, const FileInfo&) = default;
};
using TreeSnapshot = std::map<std::string, FileInfo>;  // relative path -> info; root excluded

std::string Describe(const FileInfo& f);

// Walks `dir` (lstat, no symlink following). Paths in `skip` (relative) are left out.
absl::StatusOr<TreeSnapshot> SnapshotDir(const std::string& dir,
                                         const std::set<std::string>& skip = {});
// Walks a LayerIndex, reading every regular file's bytes from `blob` through its chunks.
absl::StatusOr<TreeSnapshot> SnapshotIndex(const format::LayerIndex& index, BlobReader& blob);

// Writes into `dir` a tree with every entry type: dirs, regular files (empty, small, 9 MiB
// random, a 16 MiB sparse file with data islands), setuid/sticky modes, owners, symlinks,
// hardlinks, fifo, char and block devices, user/trusted xattrs, names with spaces and UTF-8,
// a >100-byte name and a >255-byte path; plus copies of /usr/lib/python3.11, python3/dist-packages
// and /usr/share/zoneinfo (thousands of real files). All mtimes are whole seconds.
absl::Status MakeSourceTree(const std::string& dir);

// `tar --format=FORMAT --xattrs` of `dir` into `out`.
absl::Status MakeTar(const std::string& dir, const std::string& out, const std::string& format);

// Builds tests/convert/estargz_ref (Go, reference estargz package) once into `dir`, returning
// the binary path.
absl::StatusOr<std::string> BuildEstargzRef(const std::string& dir);

// Compares two snapshots; returns a description of the first 20 differences ("" if equal).
std::string DiffSnapshots(const TreeSnapshot& want, const TreeSnapshot& got, bool seconds_only);

}  // namespace lazypull::testing

#endif  // LAZYPULL_TESTS_CONVERT_CONVERT_TEST_UTIL_H_
