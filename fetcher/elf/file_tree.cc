#include "fetcher/elf/file_tree.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <vector>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::elf {
namespace {

constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxComponents = 4096;

// Appends the components of `path` in front of `queue` (in order).
void PushFront(std::deque<std::string>& queue, std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) queue.push_front(std::move(*it));
}

std::string Join(const std::vector<std::string>& parts) {
  if (parts.empty()) return "/";
  std::string out;
  for (const std::string& p : parts) {
    out += '/';
    out += p;
  }
  return out;
}

}  // namespace

absl::StatusOr<ResolvedPath> ResolvePath(const FileTree& tree, std::string_view path,
                                         int max_symlinks) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(fmt::format("not an absolute path: \"{}\"", path));
  }
  if (path.size() > kMaxPath) {
    return absl::InvalidArgumentError(fmt::format("path of {} bytes", path.size()));
  }
  std::deque<std::string> todo;
  PushFront(todo, path);
  std::vector<std::string> done;  // resolved components: a directory chain from the root
  FileNode node = FileNode::Directory();
  int links = 0;
  size_t walked = 0;
  while (!todo.empty()) {
    if (++walked > kMaxComponents) {
      return absl::FailedPreconditionError(fmt::format("{}: too many path components", path));
    }
    std::string part = std::move(todo.front());
    todo.pop_front();
    if (node.kind != FileNode::Kind::kDirectory) {
      return absl::NotFoundError(fmt::format("{}: {} is not a directory", path, Join(done)));
    }
    if (part == ".") continue;
    if (part == "..") {
      if (!done.empty()) done.pop_back();
      node = FileNode::Directory();
      continue;
    }
    done.push_back(std::move(part));
    auto st = tree.Lstat(Join(done));
    if (!st.ok()) {
      if (absl::IsNotFound(st.status())) {
        return absl::NotFoundError(fmt::format("{}: {} does not exist", path, Join(done)));
      }
      return st.status();
    }
    if (st->whiteout) {  // a single layer's tree: the name is deleted
      return absl::NotFoundError(fmt::format("{}: {} is whited out", path, Join(done)));
    }
    if (st->kind != FileNode::Kind::kSymlink) {
      node = std::move(*st);
      continue;
    }
    if (++links > max_symlinks) {
      return absl::FailedPreconditionError(
          fmt::format("{}: more than {} symlinks", path, max_symlinks));
    }
    const std::string& target = st->symlink_target;
    if (target.empty() || target.size() > kMaxPath) {
      return absl::NotFoundError(
          fmt::format("{}: symlink {} has a target of {} bytes", path, Join(done), target.size()));
    }
    done.pop_back();
    if (target[0] == '/') done.clear();
    PushFront(todo, target);
    node = FileNode::Directory();
  }
  return ResolvedPath{Join(done), std::move(node)};
}

LocalFileTree::LocalFileTree(std::string root) : root_(std::move(root)) {
  while (!root_.empty() && root_.back() == '/') root_.pop_back();
}

absl::StatusOr<FileNode> LocalFileTree::Lstat(std::string_view path) const {
  std::string full = root_ + std::string(path);
  struct stat st;
  if (lstat(full.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(fmt::format("{}: not found", full));
    }
    return absl::UnknownError(fmt::format("lstat {}: {}", full, strerror(err)));
  }
  FileNode node;
  if (S_ISREG(st.st_mode)) {
    node.kind = FileNode::Kind::kRegular;
    node.size = static_cast<uint64_t>(st.st_size);
  } else if (S_ISDIR(st.st_mode)) {
    node.kind = FileNode::Kind::kDirectory;
    for (const char* name : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
      char value[2];
      if (lgetxattr(full.c_str(), name, value, sizeof(value)) == 1 && value[0] == 'y') {
        node.opaque = true;
      }
    }
  } else if (S_ISCHR(st.st_mode) && st.st_rdev == 0) {
    node.whiteout = true;
  } else if (S_ISLNK(st.st_mode)) {
    node.kind = FileNode::Kind::kSymlink;
    char buf[kMaxPath + 1];
    ssize_t n = readlink(full.c_str(), buf, sizeof(buf));
    if (n < 0) {
      return absl::UnknownError(fmt::format("readlink {}: {}", full, strerror(errno)));
    }
    node.symlink_target.assign(buf, static_cast<size_t>(n));
  }
  return node;
}

}  // namespace lazypull::elf
