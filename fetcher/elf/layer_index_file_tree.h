// LayerIndexFileTree: one lazy layer's file tree (its LayerIndex) as a FileTree, with the
// index's whiteouts and opaque directories reported for OverlayFileTree. Only metadata is
// read: no chunk is fetched. The index is not owned and must outlive the tree; thread-safe
// (the index is immutable).
#ifndef LAZYPULL_FETCHER_ELF_LAYER_INDEX_FILE_TREE_H_
#define LAZYPULL_FETCHER_ELF_LAYER_INDEX_FILE_TREE_H_

#include <string_view>

#include "fetcher/elf/file_tree.h"
#include "fetcher/format/layer_index.h"

namespace lazypull::elf {

class LayerIndexFileTree : public FileTree {
 public:
  explicit LayerIndexFileTree(const format::LayerIndex* index) : index_(index) {}
  absl::StatusOr<FileNode> Lstat(std::string_view path) const override;

 private:
  const format::LayerIndex* index_;
};

}  // namespace lazypull::elf

#endif  // LAZYPULL_FETCHER_ELF_LAYER_INDEX_FILE_TREE_H_
