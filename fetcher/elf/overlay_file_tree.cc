#include "fetcher/elf/overlay_file_tree.h"

#include <string>
#include <utility>

#include "absl/status/status.h"

namespace lazypull::elf {

OverlayFileTree::OverlayFileTree(std::vector<const FileTree*> layers_top_first)
    : layers_(std::move(layers_top_first)) {}

absl::StatusOr<bool> OverlayFileTree::HidesBelow(const FileTree& layer,
                                                 std::string_view path) const {
  for (size_t slash = path.find('/', 1); slash != std::string_view::npos;
       slash = path.find('/', slash + 1)) {
    auto node = layer.Lstat(path.substr(0, slash));
    if (!node.ok()) {
      if (absl::IsNotFound(node.status())) return false;  // deeper ancestors are absent too
      return node.status();
    }
    if (node->whiteout || node->opaque || node->kind != FileNode::Kind::kDirectory) return true;
  }
  return false;
}

absl::StatusOr<FileNode> OverlayFileTree::Lstat(std::string_view path) const {
  size_t layer = 0;
  return Find(path, &layer);
}

absl::StatusOr<size_t> OverlayFileTree::LayerOf(std::string_view path) const {
  size_t layer = 0;
  absl::StatusOr<FileNode> node = Find(path, &layer);
  if (!node.ok()) return node.status();
  return layer;
}

absl::StatusOr<FileNode> OverlayFileTree::Find(std::string_view path, size_t* layer_pos) const {
  *layer_pos = 0;
  if (path == "/") return FileNode::Directory();
  for (size_t i = 0; i < layers_.size(); ++i) {
    const FileTree* layer = layers_[i];
    auto node = layer->Lstat(path);
    if (node.ok()) {
      if (node->whiteout) break;
      node->opaque = false;
      *layer_pos = i;
      return node;
    }
    if (!absl::IsNotFound(node.status())) return node.status();
    auto hides = HidesBelow(*layer, path);
    if (!hides.ok()) return hides.status();
    if (*hides) break;
  }
  return absl::NotFoundError(std::string(path));
}

}  // namespace lazypull::elf
