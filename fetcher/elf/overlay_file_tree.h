// OverlayFileTree: the merged view of a stack of single-layer trees, as overlayfs (and so the
// container) sees it: the topmost layer that has a name wins; a whiteout hides the name in
// every layer below; an opaque directory, or a non-directory, hides everything under that
// path in the layers below.
//
// Layers are given top first (the lazy layer being read, then its parents down to the base
// layer); each is a LayerIndexFileTree, a LocalFileTree over an unpacked snapshot, or any
// other FileTree that reports whiteouts and opaque directories (FileNode). The layers are not
// owned and must outlive the tree. Thread-safe if the layers are.
#ifndef LAZYPULL_FETCHER_ELF_OVERLAY_FILE_TREE_H_
#define LAZYPULL_FETCHER_ELF_OVERLAY_FILE_TREE_H_

#include <string_view>
#include <vector>

#include "fetcher/elf/file_tree.h"

namespace lazypull::elf {

class OverlayFileTree : public FileTree {
 public:
  explicit OverlayFileTree(std::vector<const FileTree*> layers_top_first);

  // The node of the topmost layer that shows `path` (never a whiteout; opaque cleared).
  // NotFound if no layer shows it; a layer's other errors are returned as they are.
  absl::StatusOr<FileNode> Lstat(std::string_view path) const override;

  // The position (in the constructor's list) of the layer whose node Lstat(path) returns:
  // where a file's bytes are to be read. NotFound as Lstat.
  absl::StatusOr<size_t> LayerOf(std::string_view path) const;

 private:
  // Whether `layer` hides `path` from the layers below it through an ancestor directory of
  // `path` that is opaque, whited out or not a directory in that layer.
  absl::StatusOr<bool> HidesBelow(const FileTree& layer, std::string_view path) const;
  // Lstat, and the position of the layer that answered in *layer.
  absl::StatusOr<FileNode> Find(std::string_view path, size_t* layer) const;

  std::vector<const FileTree*> layers_;
};

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_OVERLAY_FILE_TREE_H_
