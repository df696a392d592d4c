// LayerIndexBuilder: turns TOC entries (already decoded by a format reader) into a
// LayerIndex, enforcing every structural rule of a safe layer: normalized relative paths (no
// "..", no absolute paths), no duplicate names, parents that are directories, hardlinks to
// existing non-directories, chunk lists that tile each file exactly, chunk ranges inside the
// blob's data area and not overlapping, digests present and naming one length each, gzip
// members not claiming more bytes than deflate can expand to. SOCI spans (kGzipSpan) are
// shared by the files they hold: their digest names their compressed length, and neighbouring
// spans may share the one byte where a deflate block starts mid-byte.
//
// Whiteouts are translated to the overlay view here (see layer_index.h). Not thread-safe;
// one builder builds one index.
#ifndef LAZYPULL_FETCHER_FORMAT_LAYER_INDEX_BUILDER_H_
#define LAZYPULL_FETCHER_FORMAT_LAYER_INDEX_BUILDER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"

namespace lazypull::format {

struct IndexBuildOptions {
  // Accept chunks without a digest (they are then served unverified). Off by default.
  bool allow_missing_digests = false;
  // Xattrs given to directories that held `.wh..wh..opq`.
  std::vector<std::pair<std::string, std::string>> opaque_xattrs = {{"trusted.overlay.opaque", "y"},
                                                                    {"user.overlay.opaque", "y"}};
  // Upper bound on TOC entries (bomb protection). More is InvalidArgument.
  uint64_t max_entries = 5'000'000;
  // Refuse a chunk digest that appears with two lengths. Only tests turn this off, to build
  // the index a hostile TOC would need and show that the reader's own checks hold.
  bool check_digest_lengths = true;
};

// Metadata common to every entry type.
struct EntryMeta {
  uint32_t permissions = 0;  // mode & 07777 (type bits are ignored)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // name -> raw (decoded) value
};

class LayerIndexBuilder {
 public:
  LayerIndexBuilder(LayerFormat format, IndexBuildOptions options);
  LayerIndexBuilder(const LayerIndexBuilder&) = delete;
  LayerIndexBuilder& operator=(const LayerIndexBuilder&) = delete;

  // Each Add* takes the entry's path as written in the TOC ("./a/b", "a/b/", ...). Errors are
  // InvalidArgument naming the path; after an error the builder must be discarded.
  absl::Status AddDirectory(std::string_view path, const EntryMeta& meta);
  // `chunks` must tile [0, size); chunk digests are checked for presence here and ranges at
  // Finish (eStargz members may get their compressed_length from ResolveMemberEnds).
  absl::Status AddRegular(std::string_view path, const EntryMeta& meta, uint64_t size,
                          std::vector<Chunk> chunks);
  absl::Status AddSymlink(std::string_view path, const EntryMeta& meta, std::string_view target);
  // `file_type` is S_IFCHR or S_IFBLK.
  absl::Status AddDevice(std::string_view path, const EntryMeta& meta, uint32_t file_type,
                         uint32_t major, uint32_t minor);
  absl::Status AddFifo(std::string_view path, const EntryMeta& meta);
  // Resolved at Finish, so the target may be any earlier or later entry.
  absl::Status AddHardlink(std::string_view path, std::string_view target);

  // Capacity hint: about this many entries are coming (capped at options.max_entries).
  // Reserved address space is only touched as it fills, and Finish gives back the rest in
  // place, so an overestimate costs nothing resident; it saves regrowing (and first-touching)
  // the inode and chunk arrays several times over.
  void ReserveEntries(uint64_t n);

  void SetPrefetchRange(ByteRange range) { prefetch_range_ = range; }
  // Required (at Finish) when any chunk is kGzipSpan.
  void SetSpanDecoder(std::shared_ptr<const SpanDecoder> decoder) {
    index_.span_decoder_ = std::move(decoder);
  }
  void SetNoPrefetchLandmark() { no_prefetch_landmark_ = true; }

  // eStargz (and stargz-snapshotter's zstd:chunked): every chunk whose compressed_length is
  // 0 gets end = the smallest element of
  // `member_starts` greater than its compressed_offset (member_starts must include the end
  // of the data area). A chunk with no such start is InvalidArgument.
  absl::Status ResolveMemberEnds(std::vector<uint64_t> member_starts);

  // Validates and returns the index. Chunks must lie in [0, data_end) with data_end <=
  // blob_size. InvalidArgument for structural errors.
  absl::StatusOr<LayerIndex> Finish(const Digest& toc_digest, uint64_t blob_size,
                                    uint64_t data_end);

  // Normalizes a TOC path into its components. "" and "." and "./" name the root.
  // InvalidArgument for absolute paths, "..", NUL bytes, components over 255 bytes.
  static absl::StatusOr<std::vector<std::string_view>> SplitPath(std::string_view path);

 private:
  struct PendingLink {
    std::string path;
    std::string target;
  };
  using Node = LayerIndex::Node;
  using StrRef = LayerIndex::StrRef;

  // Sets keyed by strings already in the index's string table (no copies), probed by
  // string_view: the table grows while they are in use, so they hold offsets, not views.
  struct ArenaHash {
    using is_transparent = void;
    const std::string* arena = nullptr;
    size_t operator()(std::string_view s) const {
      return absl::HashOf(absl::string_view(s.data(), s.size()));
    }
    size_t operator()(StrRef r) const { return (*this)(View(r)); }
    std::string_view View(StrRef r) const {
      return std::string_view(*arena).substr(r.offset, r.length);
    }
  };
  struct ArenaEq {
    using is_transparent = void;
    const std::string* arena = nullptr;
    std::string_view View(StrRef r) const { return ArenaHash{arena}.View(r); }
    std::string_view View(std::string_view s) const { return s; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return View(a) == View(b);
    }
  };
  // A directory entry: (parent inode, name) -> inode.
  struct ChildKey {
    Ino parent = 0;
    StrRef name;
  };
  struct ChildProbe {
    Ino parent = 0;
    std::string_view name;
  };
  struct ChildHash {
    using is_transparent = void;
    const std::string* arena = nullptr;
    size_t operator()(const ChildProbe& p) const {
      return absl::HashOf(p.parent, absl::string_view(p.name.data(), p.name.size()));
    }
    size_t operator()(const ChildKey& k) const {
      return (*this)(ChildProbe{k.parent, ArenaHash{arena}.View(k.name)});
    }
  };
  // The children index proper: a set of inodes keyed by the (parent, name) stored in each
  // node, 4 bytes a slot. Hardlink names (whose node holds another name) go to `children_`.
  struct NodeChildHash {
    using is_transparent = void;
    const LayerIndex* index = nullptr;
    size_t operator()(const ChildProbe& p) const {
      return absl::HashOf(p.parent, absl::string_view(p.name.data(), p.name.size()));
    }
    size_t operator()(Ino ino) const {
      const Node& n = index->inodes_[ino - 1];
      return (*this)(ChildProbe{n.parent, index->Str(n.name)});
    }
  };
  struct NodeChildEq {
    using is_transparent = void;
    const LayerIndex* index = nullptr;
    ChildProbe Probe(const ChildProbe& p) const { return p; }
    ChildProbe Probe(Ino ino) const {
      const Node& n = index->inodes_[ino - 1];
      return ChildProbe{n.parent, index->Str(n.name)};
    }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      ChildProbe x = Probe(a), y = Probe(b);
      return x.parent == y.parent && x.name == y.name;
    }
  };
  struct ChildEq {
    using is_transparent = void;
    const std::string* arena = nullptr;
    ChildProbe Probe(const ChildProbe& p) const { return p; }
    ChildProbe Probe(const ChildKey& k) const {
      return ChildProbe{k.parent, ArenaHash{arena}.View(k.name)};
    }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      ChildProbe x = Probe(a), y = Probe(b);
      return x.parent == y.parent && x.name == y.name;
    }
  };

  static absl::Status SplitPathInto(std::string_view path, std::vector<std::string_view>* parts);
  absl::StatusOr<StrRef> Intern(std::string_view s);
  absl::StatusOr<Ino> EnsureDir(std::string_view dir_path,
                                const std::vector<std::string_view>& parts, size_t n);
  absl::StatusOr<Ino> EnsureDirSlow(std::string_view dir_path,
                                    const std::vector<std::string_view>& parts, size_t n);
  // The inode named by `parts` (nullopt if missing); the root for no parts.
  std::optional<Ino> Resolve(const std::vector<std::string_view>& parts) const;
  std::optional<Ino> FindChild(Ino parent, std::string_view name) const;
  // Creates the node for `path` (whiteouts translated). Returns 0 (and OK) for entries that
  // are dropped (opaque markers, aufs metadata).
  absl::StatusOr<Ino> AddNode(std::string_view path, uint32_t mode, const EntryMeta& meta,
                              bool allow_dir_update);
  absl::Status AddXattrs(Node& node, const std::vector<std::pair<std::string, std::string>>& x);
  absl::Status CountEntry(std::string_view path);
  absl::Status LinkName(std::string_view path, Ino ino);

  LayerFormat format_;
  IndexBuildOptions options_;
  LayerIndex index_;
  uint64_t entries_ = 0;
  std::vector<bool> implicit_;  // per inode: created as a parent, no own entry yet
  absl::flat_hash_set<Ino, NodeChildHash, NodeChildEq> node_children_;
  absl::flat_hash_map<ChildKey, Ino, ChildHash, ChildEq> children_;  // hardlink names
  absl::flat_hash_set<StrRef, ArenaHash, ArenaEq> interned_;
  std::vector<std::string_view> parts_;  // scratch for AddNode
  struct TmpDirent {
    Ino parent;
    StrRef name;
    Ino ino;
  };
  PodVector<TmpDirent> tmp_dirents_;
  std::vector<PendingLink> links_;
  std::string last_dir_key_;  // cache of the last EnsureDir result
  Ino last_dir_ino_ = 0;
  std::optional<ByteRange> prefetch_range_;
  bool no_prefetch_landmark_ = false;
};

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_LAYER_INDEX_BUILDER_H_
