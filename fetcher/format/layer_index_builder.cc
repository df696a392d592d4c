#include "fetcher/format/layer_index_builder.h"

#include <sys/stat.h>

#include <algorithm>

#include "fetcher/format/status_util.h"
#include "fmt/format.h"

namespace lazypull::format {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr std::string_view kAufsMetaPrefix = ".wh..wh.";
constexpr uint32_t kMaxDevNumber = (1u << 20) - 1;
// The largest expansions: deflate about 1032:1 (258 bytes per 2-bit code); zstd 32768:1 (an
// RLE block: 4 bytes for 128 KiB). The slack covers headers of tiny members and frames.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr uint64_t kMaxZstdRatio = 32768;
constexpr uint64_t kMaxRatioSlack = 64 << 10;

absl::Status Invalid(std::string_view path, std::string_view what) {
  return absl::InvalidArgumentError(
      fmt::format("layer entry \"{}\": {}", path.substr(0, 512), what));
}

std::string JoinPath(const std::vector<std::string_view>& parts) {
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(p);
  }
  return out;
}

}  // namespace

LayerIndexBuilder::LayerIndexBuilder(LayerFormat format, IndexBuildOptions options)
    : format_(format),
      options_(std::move(options)),
      node_children_(0, NodeChildHash{&index_}, NodeChildEq{&index_}),
      children_(0, ChildHash{&index_.strings_}, ChildEq{&index_.strings_}),
      interned_(0, ArenaHash{&index_.strings_}, ArenaEq{&index_.strings_}) {
  // Compactness is a requirement (200,000 files under 64 MB): keep these from growing.
  static_assert(sizeof(Node) == 72);
  static_assert(sizeof(Chunk) == 80);
  index_.format_ = format;
  Node root;
  root.mode = S_IFDIR | 0755;
  root.parent = kRootIno;
  index_.inodes_.push_back(root);
  implicit_.push_back(true);
}

void LayerIndexBuilder::ReserveEntries(uint64_t n) {
  n = std::min<uint64_t>(n, options_.max_entries);
  index_.inodes_.reserve(n + 1);
  index_.chunks_.reserve(n);
  tmp_dirents_.reserve(n);
}

absl::StatusOr<std::vector<std::string_view>> LayerIndexBuilder::SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  if (auto st = SplitPathInto(path, &parts); !st.ok()) return st;
  return parts;
}

absl::Status LayerIndexBuilder::SplitPathInto(std::string_view path,
                                              std::vector<std::string_view>* out) {
  std::vector<std::string_view>& parts = *out;
  parts.clear();
  if (!path.empty() && path[0] == '/') return Invalid(path, "absolute path");
  if (path.find('\0') != std::string_view::npos) return Invalid(path, "NUL byte in path");
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") return Invalid(part, "path contains \"..\"");
    if (part.size() > 255) return Invalid(part, "path component longer than 255 bytes");
    parts.push_back(part);
  }
  return absl::OkStatus();
}

std::optional<Ino> LayerIndexBuilder::FindChild(Ino parent, std::string_view name) const {
  const ChildProbe probe{parent, name};
  if (auto it = node_children_.find(probe); it != node_children_.end()) return *it;
  if (children_.empty()) return std::nullopt;
  auto it = children_.find(probe);
  if (it == children_.end()) return std::nullopt;
  return it->second;
}

std::optional<Ino> LayerIndexBuilder::Resolve(const std::vector<std::string_view>& parts) const {
  Ino cur = kRootIno;
  for (std::string_view part : parts) {
    std::optional<Ino> next = FindChild(cur, part);
    if (!next) return std::nullopt;
    cur = *next;
  }
  return cur;
}

absl::StatusOr<LayerIndex::StrRef> LayerIndexBuilder::Intern(std::string_view s) {
  auto it = interned_.find(s);
  if (it != interned_.end()) return *it;
  std::string& arena = index_.strings_;
  if (arena.size() + s.size() > UINT32_MAX) {
    return absl::InvalidArgumentError("layer index: string table exceeds 4 GiB");
  }
  StrRef ref{static_cast<uint32_t>(arena.size()), static_cast<uint32_t>(s.size())};
  arena.append(s);
  // Only short strings are worth deduplicating (names, xattr names, common values).
  if (s.size() <= 256) interned_.insert(ref);
  return ref;
}

absl::Status LayerIndexBuilder::CountEntry(std::string_view path) {
  if (++entries_ > options_.max_entries) {
    return Invalid(path, fmt::format("more than {} entries in the TOC", options_.max_entries));
  }
  if (index_.inodes_.size() >= UINT32_MAX - 1) return Invalid(path, "too many inodes");
  return absl::OkStatus();
}

absl::StatusOr<Ino> LayerIndexBuilder::EnsureDir(std::string_view full,
                                                 const std::vector<std::string_view>& parts,
                                                 size_t n) {
  // TOCs list a directory's files together: remember the last parent resolved (compared
  // without building the joined path).
  if (last_dir_ino_ != 0) {
    size_t pos = 0;
    bool same = true;
    for (size_t i = 0; i < n && same; ++i) {
      if (i > 0) same = pos < last_dir_key_.size() && last_dir_key_[pos++] == '/';
      same = same && last_dir_key_.compare(pos, parts[i].size(), parts[i]) == 0;
      pos += parts[i].size();
    }
    if (same && pos == last_dir_key_.size()) return last_dir_ino_;
  }
  auto resolved = EnsureDirSlow(full, parts, n);
  if (resolved.ok()) {
    last_dir_key_.clear();
    for (size_t i = 0; i < n; ++i) {
      if (i > 0) last_dir_key_.push_back('/');
      last_dir_key_.append(parts[i]);
    }
    last_dir_ino_ = *resolved;
  }
  return resolved;
}

absl::StatusOr<Ino> LayerIndexBuilder::EnsureDirSlow(std::string_view full,
                                                     const std::vector<std::string_view>& parts,
                                                     size_t n) {
  Ino cur = kRootIno;
  for (size_t i = 0; i < n; ++i) {
    if (std::optional<Ino> found = FindChild(cur, parts[i])) {
      cur = *found;
      if (!S_ISDIR(index_.inodes_[cur - 1].mode)) {
        std::vector<std::string_view> prefix(parts.begin(), parts.begin() + i + 1);
        return Invalid(full, fmt::format("parent \"{}\" is not a directory", JoinPath(prefix)));
      }
      continue;
    }
    if (auto st = CountEntry(full); !st.ok()) return st;
    auto name = Intern(parts[i]);
    if (!name.ok()) return name.status();
    Node dir;
    dir.mode = S_IFDIR | 0755;
    dir.parent = cur;
    dir.name = *name;
    index_.inodes_.push_back(dir);
    implicit_.push_back(true);
    Ino ino = static_cast<Ino>(index_.inodes_.size());
    tmp_dirents_.push_back({cur, *name, ino});
    node_children_.insert(ino);
    cur = ino;
  }
  return cur;
}

absl::Status LayerIndexBuilder::AddXattrs(
    Node& node, const std::vector<std::pair<std::string, std::string>>& x) {
  if (x.empty()) return absl::OkStatus();
  if (node.xattr_count != 0) {
    // Re-specified directory: replace (the old refs stay unused in the table).
    node.xattr_count = 0;
  }
  if (x.size() > 0xffff) return absl::InvalidArgumentError("more than 65535 xattrs on one entry");
  node.xattr_begin = static_cast<uint32_t>(index_.xattrs_.size());
  for (const auto& [name, value] : x) {
    if (name.empty()) return absl::InvalidArgumentError("empty xattr name");
    auto n = Intern(name);
    if (!n.ok()) return n.status();
    auto v = Intern(value);
    if (!v.ok()) return v.status();
    index_.xattrs_.push_back({*n, *v});
  }
  node.xattr_count = static_cast<uint16_t>(x.size());
  auto first = index_.xattrs_.begin() + node.xattr_begin;
  std::sort(first, index_.xattrs_.end(), [this](const auto& a, const auto& b) {
    return index_.Str(a.name) < index_.Str(b.name);
  });
  for (auto it = first; it + 1 < index_.xattrs_.end(); ++it) {
    if (index_.Str(it->name) == index_.Str((it + 1)->name)) {
      return absl::InvalidArgumentError(
          fmt::format("duplicate xattr \"{}\"", index_.Str(it->name)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Ino> LayerIndexBuilder::AddNode(std::string_view path, uint32_t mode,
                                               const EntryMeta& meta, bool allow_dir_update) {
  if (auto st = CountEntry(path); !st.ok()) return st;
  if (auto st = SplitPathInto(path, &parts_); !st.ok()) return st;
  EntryMeta translated_meta;
  const EntryMeta* m = &meta;
  std::vector<std::string_view>& p = parts_;
  uint8_t flags = 0;
  std::string whiteout_name;
  if (!p.empty() && p.back().starts_with(kWhiteoutPrefix)) {
    if (p.back() == kOpaqueMarker) {
      auto dir = EnsureDir(path, p, p.size() - 1);
      if (!dir.ok()) return dir.status();
      Node& d = index_.inodes_[*dir - 1];
      d.flags |= kOpaque;
      return Ino{0};
    }
    if (p.back().starts_with(kAufsMetaPrefix)) return Ino{0};
    if (S_ISDIR(mode)) return Invalid(path, "whiteout entry is a directory");
    whiteout_name = std::string(p.back().substr(kWhiteoutPrefix.size()));
    if (whiteout_name.empty() || whiteout_name == "." || whiteout_name == "..") {
      return Invalid(path, "whiteout names no file");
    }
    p.back() = whiteout_name;
    mode = S_IFCHR;
    translated_meta.uid = meta.uid;
    translated_meta.gid = meta.gid;
    translated_meta.mtime_sec = meta.mtime_sec;
    translated_meta.mtime_nsec = meta.mtime_nsec;
    m = &translated_meta;
    flags = kWhiteout;
  }
  if (p.empty()) {
    // The root itself ("./"): only a directory may describe it.
    if (!S_ISDIR(mode)) return Invalid(path, "the layer root must be a directory");
    if (!implicit_[0] && !allow_dir_update) return Invalid(path, "duplicate entry for the root");
    Node& root = index_.inodes_[0];
    root.mode = S_IFDIR | (m->permissions & 07777);
    root.uid = m->uid;
    root.gid = m->gid;
    root.mtime_sec = m->mtime_sec;
    root.mtime_nsec = m->mtime_nsec;
    implicit_[0] = false;
    if (auto st = AddXattrs(root, m->xattrs); !st.ok()) return Invalid(path, Msg(st));
    return kRootIno;
  }
  auto parent = EnsureDir(path, p, p.size() - 1);
  if (!parent.ok()) return parent.status();
  Ino ino;
  if (std::optional<Ino> existing = FindChild(*parent, p.back())) {
    ino = *existing;
    Node& old = index_.inodes_[ino - 1];
    if (!(S_ISDIR(mode) && S_ISDIR(old.mode) && implicit_[ino - 1])) {
      return Invalid(path, "duplicate name in the layer");
    }
    implicit_[ino - 1] = false;
  } else {
    auto name = Intern(p.back());
    if (!name.ok()) return name.status();
    Node node;
    node.parent = *parent;
    node.name = *name;
    index_.inodes_.push_back(node);
    implicit_.push_back(false);
    ino = static_cast<Ino>(index_.inodes_.size());
    tmp_dirents_.push_back({*parent, *name, ino});
    node_children_.insert(ino);
  }
  Node& node = index_.inodes_[ino - 1];
  node.mode = mode | (flags & kWhiteout ? 0 : (m->permissions & 07777));
  node.uid = m->uid;
  node.gid = m->gid;
  node.mtime_sec = m->mtime_sec;
  node.mtime_nsec = m->mtime_nsec;
  node.flags |= flags;
  if (S_ISDIR(mode)) node.size = 4096;
  if (auto st = AddXattrs(node, m->xattrs); !st.ok()) return Invalid(path, Msg(st));
  return ino;
}

absl::Status LayerIndexBuilder::AddDirectory(std::string_view path, const EntryMeta& meta) {
  return AddNode(path, S_IFDIR, meta, false).status();
}

absl::Status LayerIndexBuilder::AddRegular(std::string_view path, const EntryMeta& meta,
                                           uint64_t size, std::vector<Chunk> chunks) {
  auto ino = AddNode(path, S_IFREG, meta, false);
  if (!ino.ok()) return ino.status();
  if (*ino == 0) return absl::OkStatus();
  Node& node = index_.inodes_[*ino - 1];
  if (node.flags & kWhiteout) return absl::OkStatus();  // a `.wh.X` file carries no data
  node.size = size;
  uint64_t expect = 0;
  for (const Chunk& c : chunks) {
    if (c.length == 0) return Invalid(path, "empty chunk");
    if (c.file_offset != expect) {
      return Invalid(path, fmt::format("chunk at file offset {} but expected {} (chunks must "
                                       "be contiguous and not overlap)",
                                       c.file_offset, expect));
    }
    if (c.length > size - expect || expect > size) {
      return Invalid(path, fmt::format("chunk [{}, +{}) extends past the file size {}",
                                       c.file_offset, c.length, size));
    }
    if (c.inner_offset > UINT64_MAX - c.length ||
        c.compressed_offset > UINT64_MAX - c.compressed_length) {
      return Invalid(path, "chunk offsets overflow");
    }
    if (!c.has_digest && !options_.allow_missing_digests) {
      return absl::InvalidArgumentError(
          fmt::format("layer entry \"{}\": chunk at file offset {} has no digest (set "
                      "allow_missing_digests to accept unverifiable layers)",
                      path.substr(0, 512), c.file_offset));
    }
    expect += c.length;
  }
  if (expect != size) {
    return Invalid(path, fmt::format("chunks cover {} of {} bytes", expect, size));
  }
  if (index_.chunks_.size() + chunks.size() > UINT32_MAX) return Invalid(path, "too many chunks");
  node.begin = static_cast<uint32_t>(index_.chunks_.size());
  node.count = static_cast<uint32_t>(chunks.size());
  index_.chunks_.append(chunks.data(), chunks.size());
  index_.total_file_bytes_ += size;
  return absl::OkStatus();
}

absl::Status LayerIndexBuilder::AddSymlink(std::string_view path, const EntryMeta& meta,
                                           std::string_view target) {
  if (target.empty()) return Invalid(path, "symlink with an empty target");
  if (target.size() > 4095) return Invalid(path, "symlink target longer than 4095 bytes");
  if (target.find('\0') != std::string_view::npos) return Invalid(path, "NUL in symlink target");
  auto ino = AddNode(path, S_IFLNK, meta, false);
  if (!ino.ok()) return ino.status();
  if (*ino == 0) return absl::OkStatus();
  Node& node = index_.inodes_[*ino - 1];
  if (node.flags & kWhiteout) return absl::OkStatus();
  auto ref = Intern(target);
  if (!ref.ok()) return ref.status();
  Node& n = index_.inodes_[*ino - 1];
  n.begin = ref->offset;
  n.count = ref->length;
  n.size = target.size();
  n.mode = S_IFLNK | 0777;
  return absl::OkStatus();
}

absl::Status LayerIndexBuilder::AddDevice(std::string_view path, const EntryMeta& meta,
                                          uint32_t file_type, uint32_t major, uint32_t minor) {
  if (file_type != S_IFCHR && file_type != S_IFBLK) return Invalid(path, "not a device type");
  if (major > 4095 || minor > kMaxDevNumber) {
    return Invalid(path, fmt::format("device number {}:{} out of range", major, minor));
  }
  auto ino = AddNode(path, file_type, meta, false);
  if (!ino.ok()) return ino.status();
  if (*ino == 0) return absl::OkStatus();
  Node& node = index_.inodes_[*ino - 1];
  if (!(node.flags & kWhiteout)) node.rdev = (major << 20) | minor;
  return absl::OkStatus();
}

absl::Status LayerIndexBuilder::AddFifo(std::string_view path, const EntryMeta& meta) {
  return AddNode(path, S_IFIFO, meta, false).status();
}

absl::Status LayerIndexBuilder::AddHardlink(std::string_view path, std::string_view target) {
  if (auto st = CountEntry(path); !st.ok()) return st;
  links_.push_back({std::string(path), std::string(target)});
  return absl::OkStatus();
}

absl::Status LayerIndexBuilder::ResolveMemberEnds(std::vector<uint64_t> member_starts) {
  std::sort(member_starts.begin(), member_starts.end());
  member_starts.erase(std::unique(member_starts.begin(), member_starts.end()), member_starts.end());
  for (Chunk& c : index_.chunks_) {
    if (c.compressed_length != 0) continue;
    auto it = std::upper_bound(member_starts.begin(), member_starts.end(), c.compressed_offset);
    if (it == member_starts.end()) {
      return absl::InvalidArgumentError(fmt::format(
          "chunk at blob offset {} lies past the end of the data area", c.compressed_offset));
    }
    c.compressed_length = *it - c.compressed_offset;
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerIndex> LayerIndexBuilder::Finish(const Digest& toc_digest, uint64_t blob_size,
                                                     uint64_t data_end) {
  if (data_end > blob_size) {
    return absl::InvalidArgumentError(
        fmt::format("data area end {} is past the blob size {}", data_end, blob_size));
  }
  // Hardlinks, in TOC order (a link to an earlier link resolves to the same inode).
  for (const PendingLink& link : links_) {
    auto target_parts = SplitPath(link.target);
    if (!target_parts.ok()) return Invalid(link.path, Msg(target_parts.status()));
    std::optional<Ino> found = target_parts->empty() ? std::nullopt : Resolve(*target_parts);
    if (!found) {
      return Invalid(link.path, fmt::format("hardlink to missing target \"{}\"", link.target));
    }
    Ino target = *found;
    if (S_ISDIR(index_.inodes_[target - 1].mode)) {
      return Invalid(link.path, fmt::format("hardlink to directory \"{}\"", link.target));
    }
    auto parts = SplitPath(link.path);
    if (!parts.ok()) return parts.status();
    if (parts->empty()) return Invalid(link.path, "hardlink names the root");
    if (parts->back().starts_with(kWhiteoutPrefix)) {
      return Invalid(link.path, "hardlink named as a whiteout");
    }
    auto parent = EnsureDir(link.path, *parts, parts->size() - 1);
    if (!parent.ok()) return parent.status();
    if (FindChild(*parent, parts->back())) {
      return Invalid(link.path, "duplicate name in the layer");
    }
    auto name = Intern(parts->back());
    if (!name.ok()) return name.status();
    tmp_dirents_.push_back({*parent, *name, target});
    children_.emplace(ChildKey{*parent, *name}, target);
  }
  // Release the build-time maps early (the opaque xattrs below still intern).
  node_children_ = decltype(node_children_)(0, NodeChildHash{&index_}, NodeChildEq{&index_});
  children_ = decltype(children_)(0, ChildHash{&index_.strings_}, ChildEq{&index_.strings_});
  interned_ = decltype(interned_)(0, ArenaHash{&index_.strings_}, ArenaEq{&index_.strings_});
  links_ = {};

  // Opaque directories get their overlay xattrs.
  for (Node& n : index_.inodes_) {
    if (!(n.flags & kOpaque)) continue;
    std::vector<std::pair<std::string, std::string>> x;
    for (uint32_t i = 0; i < n.xattr_count; ++i) {
      const auto& ref = index_.xattrs_[n.xattr_begin + i];
      x.emplace_back(index_.Str(ref.name), index_.Str(ref.value));
    }
    for (const auto& [k, v] : options_.opaque_xattrs) {
      auto same = [&k = k](const auto& e) { return e.first == k; };
      x.erase(std::remove_if(x.begin(), x.end(), same), x.end());
      x.emplace_back(k, v);
    }
    n.xattr_count = 0;
    if (auto st = AddXattrs(n, x); !st.ok()) return st;
  }

  // Directory entries grouped per parent, sorted by name; link counts.
  std::sort(tmp_dirents_.begin(), tmp_dirents_.end(), [this](const auto& a, const auto& b) {
    if (a.parent != b.parent) return a.parent < b.parent;
    return index_.Str(a.name) < index_.Str(b.name);
  });
  for (Node& n : index_.inodes_) {
    n.nlink = S_ISDIR(n.mode) ? 2 : 0;
    if (S_ISDIR(n.mode)) n.count = 0;
  }
  index_.dirents_.reserve(tmp_dirents_.size());
  for (size_t i = 0; i < tmp_dirents_.size(); ++i) {
    const TmpDirent& d = tmp_dirents_[i];
    Node& parent = index_.inodes_[d.parent - 1];
    if (parent.count == 0) parent.begin = static_cast<uint32_t>(i);
    ++parent.count;
    Node& child = index_.inodes_[d.ino - 1];
    if (S_ISDIR(child.mode)) {
      ++parent.nlink;
    } else {
      ++child.nlink;
    }
    index_.dirents_.push_back({d.name, d.ino});
  }
  tmp_dirents_ = PodVector<TmpDirent>();
  index_.inodes_[0].nlink = std::max<uint32_t>(index_.inodes_[0].nlink, 2);

  // Chunk ranges: inside the data area, and members/frames never partially overlapping. One
  // digest names one content, so it has one length: the reader shares fetches and cache
  // entries by digest, and a TOC giving a digest two lengths would make a read of the longer
  // one ask for bytes the shorter one never had.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.reserve(index_.chunks_.size());
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  // Chunk indices keyed by their digest (4 bytes a slot instead of a 24-byte copy).
  const PodVector<Chunk>& all = index_.chunks_;
  auto digest_of = [&all](uint32_t i) {
    return absl::string_view(reinterpret_cast<const char*>(all[i].digest.data()),
                             all[i].digest.size());
  };
  auto hash = [&digest_of](uint32_t i) { return absl::HashOf(digest_of(i)); };
  auto eq = [&digest_of](uint32_t a, uint32_t b) { return digest_of(a) == digest_of(b); };
  absl::flat_hash_set<uint32_t, decltype(hash), decltype(eq)> digest_lengths(0, hash, eq);
  if (options_.check_digest_lengths) digest_lengths.reserve(all.size());
  for (Ino ino = 1; ino <= index_.inodes_.size(); ++ino) {
    const Node& n = index_.inodes_[ino - 1];
    if (!S_ISREG(n.mode)) continue;
    for (uint32_t i = 0; i < n.count; ++i) {
      const Chunk& c = index_.chunks_[n.begin + i];
      if (c.compression == ChunkCompression::kZeros) continue;  // never fetched nor cached
      if (c.has_digest && options_.check_digest_lengths) {
        auto [it, inserted] = digest_lengths.insert(n.begin + i);
        if (!inserted && all[*it].digest_length() != c.digest_length()) {
          return absl::InvalidArgumentError(
              fmt::format("layer entry \"{}\": chunk at file offset {} has digest {} with length "
                          "{}, but another chunk has the same digest with length {}",
                          index_.Path(ino), c.file_offset, c.digest_value().ToString(),
                          c.digest_length(), all[*it].digest_length()));
        }
      }
      if (c.compression == ChunkCompression::kGzipSpan && index_.span_decoder_ == nullptr) {
        return Invalid(index_.Path(ino), "SOCI span chunk in an index without a span decoder");
      }
      if (c.compressed_length == 0 || c.compressed_offset > data_end ||
          c.compressed_length > data_end - c.compressed_offset) {
        return absl::InvalidArgumentError(fmt::format(
            "layer entry \"{}\": chunk at blob range [{}, +{}) is outside the data area [0, {})",
            index_.Path(ino), c.compressed_offset, c.compressed_length, data_end));
      }
      // Neither codec can expand past a fixed ratio: a chunk claiming more than its member or
      // frame can hold is a lie, and decoding it to find out would be a decompression bomb.
      const bool deflate = c.compression == ChunkCompression::kGzipMember ||
                           c.compression == ChunkCompression::kGzipSpan;
      const uint64_t ratio = deflate ? kMaxDeflateRatio : kMaxZstdRatio;
      if (c.compressed_length <= (UINT64_MAX - kMaxRatioSlack) / ratio &&
          c.inner_offset + c.length > ratio * c.compressed_length + kMaxRatioSlack) {
        return absl::InvalidArgumentError(fmt::format(
            "layer entry \"{}\": chunk at file offset {} claims {} bytes at inner offset {} of a "
            "{}-byte {}, more than it can expand to",
            index_.Path(ino), c.file_offset, c.length, c.inner_offset, c.compressed_length,
            deflate ? "gzip member or span" : "zstd frame"));
      }
      if (c.compression == ChunkCompression::kGzipSpan) {
        spans.emplace_back(c.compressed_offset, c.compressed_offset + c.compressed_length);
      } else {
        ranges.emplace_back(c.compressed_offset, c.compressed_offset + c.compressed_length);
      }
    }
  }
  // SOCI spans: shared by every file in them; the next span starts at the byte where its
  // deflate block begins, which the previous span may also hold (checkpoint bits).
  std::sort(spans.begin(), spans.end());
  spans.erase(std::unique(spans.begin(), spans.end()), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first + 1 < spans[i - 1].second) {
      return absl::InvalidArgumentError(
          fmt::format("SOCI spans overlap in the blob: [{}, {}) and [{}, {})", spans[i - 1].first,
                      spans[i - 1].second, spans[i].first, spans[i].second));
    }
  }
  if (!spans.empty() && !ranges.empty()) {
    return absl::InvalidArgumentError("a layer index mixes SOCI spans with other chunk kinds");
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i] == ranges[i - 1]) {
      if (format_ == LayerFormat::kZstdChunked) {
        return absl::InvalidArgumentError(
            fmt::format("two chunks share the zstd frame at blob offset {}", ranges[i].first));
      }
      continue;  // eStargz: several small files in one gzip member (innerOffset)
    }
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(fmt::format(
          "chunk ranges overlap in the blob: [{}, {}) and [{}, {})", ranges[i - 1].first,
          ranges[i - 1].second, ranges[i].first, ranges[i].second));
    }
  }

  index_.toc_digest_ = toc_digest;
  index_.blob_size_ = blob_size;
  index_.data_end_ = data_end;
  index_.prefetch_range_ = prefetch_range_;
  index_.no_prefetch_landmark_ = no_prefetch_landmark_;
  index_.strings_.shrink_to_fit();
  index_.inodes_.shrink_to_fit();  // in place: realloc to a smaller size never moves
  index_.dirents_.shrink_to_fit();
  index_.chunks_.shrink_to_fit();
  index_.xattrs_.shrink_to_fit();
  return std::move(index_);
}

}  // namespace lazypull::format
