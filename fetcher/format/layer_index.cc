#include "fetcher/format/layer_index.h"

#include <sys/stat.h>

#include <algorithm>

namespace lazypull::format {

std::string_view LayerFormatName(LayerFormat format) {
  switch (format) {
    case LayerFormat::kEstargz:
      return "estargz";
    case LayerFormat::kZstdChunked:
      return "zstd:chunked";
    case LayerFormat::kSoci:
      return "soci";
  }
  return "unknown";
}

Digest Chunk::digest_value() const {
  if (!has_digest) return Digest();
  return Digest::FromRaw(std::string_view(reinterpret_cast<const char*>(digest.data()), 32));
}

std::optional<InodeAttr> LayerIndex::GetAttr(Ino ino) const {
  const Node* n = NodeOf(ino);
  if (n == nullptr) return std::nullopt;
  InodeAttr a;
  a.ino = ino;
  a.mode = n->mode;
  a.nlink = n->nlink;
  a.uid = n->uid;
  a.gid = n->gid;
  a.dev_major = n->rdev >> 20;
  a.dev_minor = n->rdev & 0xfffff;
  a.size = n->size;
  a.mtime_sec = n->mtime_sec;
  a.mtime_nsec = n->mtime_nsec;
  a.flags = n->flags;
  return a;
}

size_t LayerIndex::ChildCount(Ino dir) const {
  const Node* n = NodeOf(dir);
  if (n == nullptr || !S_ISDIR(n->mode)) return 0;
  return n->count;
}

DirEntry LayerIndex::Child(Ino dir, size_t i) const {
  const Node* n = NodeOf(dir);
  if (n == nullptr || !S_ISDIR(n->mode) || i >= n->count) return DirEntry{};
  const Dirent& d = dirents_[n->begin + i];
  return DirEntry{Str(d.name), d.ino};
}

std::optional<Ino> LayerIndex::Lookup(Ino dir, std::string_view name) const {
  const Node* n = NodeOf(dir);
  if (n == nullptr || !S_ISDIR(n->mode)) return std::nullopt;
  auto first = dirents_.begin() + n->begin;
  auto last = first + n->count;
  auto it = std::lower_bound(first, last, name, [this](const Dirent& d, std::string_view key) {
    return Str(d.name) < key;
  });
  if (it == last || Str(it->name) != name) return std::nullopt;
  return it->ino;
}

Ino LayerIndex::Parent(Ino ino) const {
  const Node* n = NodeOf(ino);
  return n == nullptr ? 0 : n->parent;
}

std::string_view LayerIndex::Name(Ino ino) const {
  const Node* n = NodeOf(ino);
  return n == nullptr ? std::string_view() : Str(n->name);
}

std::string LayerIndex::Path(Ino ino) const {
  std::vector<std::string_view> parts;
  for (int depth = 0; IsValid(ino) && ino != kRootIno && depth < 4096; ++depth) {
    parts.push_back(Name(ino));
    ino = Parent(ino);
  }
  std::string out;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (!out.empty()) out.push_back('/');
    out.append(*it);
  }
  return out;
}

std::optional<Ino> LayerIndex::LookupPath(std::string_view path) const {
  Ino cur = kRootIno;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    auto next = Lookup(cur, part);
    if (!next) return std::nullopt;
    cur = *next;
  }
  return cur;
}

std::string_view LayerIndex::SymlinkTarget(Ino ino) const {
  const Node* n = NodeOf(ino);
  if (n == nullptr || !S_ISLNK(n->mode)) return {};
  return Str(StrRef{n->begin, n->count});
}

std::vector<std::pair<std::string_view, std::string_view>> LayerIndex::Xattrs(Ino ino) const {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  const Node* n = NodeOf(ino);
  if (n == nullptr) return out;
  out.reserve(n->xattr_count);
  for (uint32_t i = 0; i < n->xattr_count; ++i) {
    const XattrRef& x = xattrs_[n->xattr_begin + i];
    out.emplace_back(Str(x.name), Str(x.value));
  }
  return out;
}

std::optional<std::string_view> LayerIndex::GetXattr(Ino ino, std::string_view name) const {
  const Node* n = NodeOf(ino);
  if (n == nullptr) return std::nullopt;
  for (uint32_t i = 0; i < n->xattr_count; ++i) {
    const XattrRef& x = xattrs_[n->xattr_begin + i];
    if (Str(x.name) == name) return Str(x.value);
  }
  return std::nullopt;
}

std::span<const Chunk> LayerIndex::Chunks(Ino ino) const {
  const Node* n = NodeOf(ino);
  if (n == nullptr || !S_ISREG(n->mode)) return {};
  return std::span<const Chunk>(chunks_.data() + n->begin, n->count);
}

std::span<const Chunk> LayerIndex::ChunksInRange(Ino ino, uint64_t offset, uint64_t length) const {
  std::span<const Chunk> all = Chunks(ino);
  if (all.empty() || length == 0) return {};
  // First chunk whose end is past `offset`.
  auto first = std::upper_bound(all.begin(), all.end(), offset, [](uint64_t off, const Chunk& c) {
    return off < c.file_offset + c.length;
  });
  if (first == all.end()) return {};
  uint64_t end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
  auto last = std::lower_bound(first, all.end(), end,
                               [](const Chunk& c, uint64_t e) { return c.file_offset < e; });
  return std::span<const Chunk>(&*first, static_cast<size_t>(last - first));
}

size_t LayerIndex::MemoryUsage() const {
  return sizeof(*this) + strings_.capacity() + inodes_.capacity() * sizeof(Node) +
         dirents_.capacity() * sizeof(Dirent) + chunks_.capacity() * sizeof(Chunk) +
         xattrs_.capacity() * sizeof(XattrRef);
}

}  // namespace lazypull::format
