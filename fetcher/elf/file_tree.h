// FileTree: the read-only view of a container image's merged file tree that library
// resolution needs (what exists, what kind, where a symlink points), and ResolvePath, which
// follows symlinks inside that tree as the kernel would under a chroot at its root.
//
// Implementations: LocalFileTree (a directory of the local filesystem: an unpacked layer, or
// a whole root in tests), LayerIndexFileTree (one lazy layer), and OverlayFileTree, which
// stacks single layers the way overlayfs merges them (whiteouts, opaque directories) into the
// image's view; tests fake it freely.
#ifndef LAZYPULL_FETCHER_ELF_FILE_TREE_H_
#define LAZYPULL_FETCHER_ELF_FILE_TREE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace lazypull::elf {

struct FileNode {
  enum class Kind { kRegular, kDirectory, kSymlink, kOther };
  Kind kind = Kind::kOther;
  uint64_t size = 0;           // regular files
  std::string symlink_target;  // symlinks, verbatim
  // Only a single layer's tree reports these (OverlayFileTree consumes them): an overlayfs
  // whiteout (char device 0:0) hiding the name in lower layers, and an opaque directory
  // hiding the lower layers' contents of that directory.
  bool whiteout = false;
  bool opaque = false;

  static FileNode Regular(uint64_t size) { return {Kind::kRegular, size, {}, false, false}; }
  static FileNode Directory(bool opaque = false) {
    return {Kind::kDirectory, 0, {}, false, opaque};
  }
  static FileNode Symlink(std::string target) {
    return {Kind::kSymlink, 0, std::move(target), false, false};
  }
  static FileNode Whiteout() { return {Kind::kOther, 0, {}, true, false}; }
};

// Implementations are thread-safe (const methods may be called from any thread).
class FileTree {
 public:
  virtual ~FileTree() = default;
  // The entry at `path`, absolute and normalized ("/usr/lib/x"; "/" is the root), without
  // following a symlink in its last component. Callers guarantee that no earlier component
  // is a symlink (ResolvePath walks one component at a time). NotFound if absent (also when
  // an earlier component is not a directory); other errors as the implementation has them.
  virtual absl::StatusOr<FileNode> Lstat(std::string_view path) const = 0;
};

struct ResolvedPath {
  std::string path;  // absolute, normalized, symlink-free
  FileNode node;     // of `path`: never a symlink
};

// Follows `path` (absolute; "." and ".." and repeated slashes allowed) through the tree,
// resolving every symlink on the way: absolute targets restart at the tree's root, ".." stops
// at the root, so nothing escapes the tree. At most `max_symlinks` (40, Linux's limit) are
// followed and at most 4096 path components walked. Errors: NotFound when a component is
// missing or a non-final component is not a directory; InvalidArgument for a relative or
// over-long path; FailedPrecondition for too many symlinks (ELOOP); Lstat errors as they are.
absl::StatusOr<ResolvedPath> ResolvePath(const FileTree& tree, std::string_view path,
                                         int max_symlinks = 40);

// A FileTree over a directory of the local filesystem (lstat/readlink below `root`; ""
// or "/" is the machine's own root). A char device 0:0 is reported as a whiteout and a
// directory with the xattr trusted.overlay.opaque or user.overlay.opaque = "y" as opaque, so
// an unpacked overlayfs layer can sit in an OverlayFileTree. Thread-safe.
class LocalFileTree : public FileTree {
 public:
  explicit LocalFileTree(std::string root);
  absl::StatusOr<FileNode> Lstat(std::string_view path) const override;

 private:
  std::string root_;  // without trailing slash
};

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_FILE_TREE_H_
