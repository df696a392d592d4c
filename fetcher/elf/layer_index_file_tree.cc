#include "fetcher/elf/layer_index_file_tree.h"

#include <sys/stat.h>

#include <string>

#include "absl/status/status.h"

namespace lazypull::elf {

absl::StatusOr<FileNode> LayerIndexFileTree::Lstat(std::string_view path) const {
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  auto ino = index_->LookupPath(path);
  if (!ino) return absl::NotFoundError(std::string(path));
  auto attr = index_->GetAttr(*ino);
  if (!attr) return absl::NotFoundError(std::string(path));
  if (attr->flags & format::kWhiteout) return FileNode::Whiteout();
  switch (attr->mode & S_IFMT) {
    case S_IFREG:
      return FileNode::Regular(attr->size);
    case S_IFDIR:
      return FileNode::Directory((attr->flags & format::kOpaque) != 0);
    case S_IFLNK:
      return FileNode::Symlink(std::string(index_->SymlinkTarget(*ino)));
    default:
      return FileNode{};
  }
}

}  // namespace lazypull::elf
