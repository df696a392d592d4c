// LayerIndex: the compact, immutable in-memory index of one lazy layer (eStargz, zstd:chunked
// or a gzip layer described by a SOCI zTOC): a file tree with inode numbers plus, per regular file,
// where each chunk of its bytes sits in the compressed blob.
//
// View: the index stores the OVERLAYFS view of the layer, i.e. exactly what containerd's own
// unpacker would leave on disk, so the FUSE layer can serve it as is:
//   - an OCI whiteout `.wh.NAME` becomes an entry NAME: a char device 0:0, mode 0 (flag
//     kWhiteout; the raw OCI name is ".wh." + NAME);
//   - `.wh..wh..opq` is not an entry; its directory gets flag kOpaque and the xattrs listed
//     in IndexBuildOptions::opaque_xattrs (default trusted.overlay.opaque=y and
//     user.overlay.opaque=y), which Xattrs()/GetXattr() return like any stored xattr;
//   - eStargz landmarks (`.prefetch.landmark`, `.no.prefetch.landmark`) and the TOC are
//     hidden; the prioritized range survives as prefetch_range().
// Other `.wh..wh.*` aufs metadata entries are dropped.
//
// Inodes are dense: 1 is the root, valid inodes are 1..inode_count(). Hardlinks share one
// inode (nlink counts the names); directories have nlink 2 + subdirectories. Directory
// children are sorted bytewise by name; readdir position i is child i.
//
// Thread-safety: immutable after construction; every const method is safe from any number of
// threads without locking. Returned string_views/spans point into the index and live as
// long as it does.
#ifndef LAZYPULL_FETCHER_FORMAT_LAYER_INDEX_H_
#define LAZYPULL_FETCHER_FORMAT_LAYER_INDEX_H_

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/format/pod_vector.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::format {

using Ino = uint32_t;
inline constexpr Ino kRootIno = 1;

enum class LayerFormat : uint8_t { kEstargz, kZstdChunked, kSoci };
std::string_view LayerFormatName(LayerFormat format);

// How a chunk's bytes are stored in the blob.
enum class ChunkCompression : uint8_t {
  kGzipMember,  // eStargz: a gzip member; the chunk starts `inner_offset` bytes into it.
  kZstdFrame,   // zstd:chunked: one zstd frame holding exactly this chunk.
  kZeros,       // zstd:chunked hole: all zeros, need not be fetched.
  // SOCI: the compressed range is a whole span of an unmodified gzip stream (shared by every
  // file with bytes in it), which inflates only from its checkpoint (SpanDecoder); the chunk
  // is `length` bytes at `inner_offset` of the inflated span, and `digest` is the sha256 of
  // the span's COMPRESSED bytes.
  kGzipSpan,
};

// One piece of a regular file. 80 bytes.
struct Chunk {
  uint64_t compressed_offset = 0;    // blob offset of the gzip member / zstd frame
  uint64_t compressed_length = 0;    // its length in the blob (the whole member/frame)
  uint64_t file_offset = 0;          // offset of the chunk's first byte within the file
  uint64_t length = 0;               // uncompressed bytes of this chunk (> 0)
  uint64_t inner_offset = 0;         // eStargz only: offset inside the decompressed member
  std::array<uint8_t, 32> digest{};  // sha256 of the chunk's uncompressed bytes (kGzipSpan:
                                     // of the span's compressed bytes)
  ChunkCompression compression = ChunkCompression::kGzipMember;
  bool has_digest = false;  // false only when built with allow_missing_digests

  ByteRange compressed_range() const { return {compressed_offset, compressed_length}; }
  // The length the chunk's digest names: the uncompressed length, or for kGzipSpan the
  // span's compressed length (fetches, cache entries and single flight are per span).
  uint64_t digest_length() const {
    return compression == ChunkCompression::kGzipSpan ? compressed_length : length;
  }
  Digest digest_value() const;  // empty Digest if !has_digest
};

// Inflates the spans of kGzipSpan chunks (SOCI), which need the checkpoints of their layer's
// zTOC. Owned by the LayerIndex of that layer. Stateless and thread-safe.
class SpanDecoder {
 public:
  virtual ~SpanDecoder() = default;
  // Inflates the whole span of `chunk` (a kGzipSpan chunk of this layer) from `compressed`,
  // exactly chunk.compressed_range() of the blob, which the caller has ALREADY checked against
  // chunk.digest (no unverified byte is inflated). DataLoss if the bytes do not inflate to the
  // span's length ending at the span's end; InvalidArgument if `chunk` names no span of this
  // layer.
  virtual absl::StatusOr<std::string> Inflate(const Chunk& chunk,
                                              std::string_view compressed) const = 0;
  // Hint: the spans of these chunks (of this layer) are about to be fetched, so whatever else
  // Inflate will need for them (a fine index's windows) can be fetched alongside. Must not
  // block. Default: nothing.
  virtual void WillFetch(std::span<const Chunk* const> /*chunks*/) const {}
};

// Per-inode flags.
enum InodeFlags : uint8_t {
  kWhiteout = 1 << 0,  // char 0:0 that came from an OCI `.wh.NAME`
  kOpaque = 1 << 1,    // directory that held `.wh..wh..opq`
};

// stat-like attributes of one inode.
struct InodeAttr {
  Ino ino = 0;
  uint32_t mode = 0;  // full st_mode: S_IFMT type bits | permission/suid/sgid/sticky bits
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t dev_major = 0;  // char/block devices
  uint32_t dev_minor = 0;
  uint64_t size = 0;  // regular: file size; symlink: target length; dir: 4096
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint8_t flags = 0;  // InodeFlags
};

struct DirEntry {
  std::string_view name;
  Ino ino = 0;
};

class LayerIndex {
 public:
  LayerIndex(LayerIndex&&) = default;
  LayerIndex& operator=(LayerIndex&&) = default;

  LayerFormat format() const { return format_; }
  // Digest that authenticated the TOC (eStargz: sha256 of the TOC JSON; zstd:chunked: sha256
  // of the compressed manifest).
  const Digest& toc_digest() const { return toc_digest_; }
  uint64_t blob_size() const { return blob_size_; }
  // [0, end of the last file payload): everything a full background fetch needs.
  ByteRange data_range() const { return {0, data_end_}; }
  // eStargz `.prefetch.landmark`: the prioritized files occupy [0, landmark offset), to be
  // fetched in one request at mount. nullopt without a prefetch landmark.
  std::optional<ByteRange> prefetch_range() const { return prefetch_range_; }
  bool has_no_prefetch_landmark() const { return no_prefetch_landmark_; }

  size_t inode_count() const { return inodes_.size(); }
  bool IsValid(Ino ino) const { return ino >= 1 && ino <= inodes_.size(); }

  // Attributes of `ino`; nullopt if it is not a valid inode.
  std::optional<InodeAttr> GetAttr(Ino ino) const;

  // Child named `name` of directory `dir`; nullopt if absent or `dir` is not a directory.
  std::optional<Ino> Lookup(Ino dir, std::string_view name) const;
  // Children of `dir` in readdir order (bytewise by name): ChildCount() is 0 for a
  // non-directory; Child(dir, i) for i < ChildCount(dir). "." and ".." are not included (see
  // Parent()).
  size_t ChildCount(Ino dir) const;
  DirEntry Child(Ino dir, size_t i) const;
  // Parent directory of a directory (the root is its own parent); for other inodes the
  // directory of the first name that referenced them.
  Ino Parent(Ino ino) const;
  // The first name that referenced `ino` ("" for the root).
  std::string_view Name(Ino ino) const;
  // Path of `ino` from the root without leading slash (for logs and tests).
  std::string Path(Ino ino) const;
  // Resolves a slash-separated relative path ("" = root). Does not follow symlinks.
  std::optional<Ino> LookupPath(std::string_view path) const;

  // Symlink target ("" for non-symlinks).
  std::string_view SymlinkTarget(Ino ino) const;
  // Xattrs (name, raw value), sorted by name. Includes the synthesized opaque xattrs.
  std::vector<std::pair<std::string_view, std::string_view>> Xattrs(Ino ino) const;
  std::optional<std::string_view> GetXattr(Ino ino, std::string_view name) const;
  // Whether any inode has an xattr (stored or synthesized).
  bool has_xattrs() const { return !xattrs_.empty(); }

  // All chunks of a regular file, sorted by file_offset, contiguous from 0 to size.
  std::span<const Chunk> Chunks(Ino ino) const;
  // The chunks that overlap [offset, offset + length) of a regular file (empty past EOF).
  std::span<const Chunk> ChunksInRange(Ino ino, uint64_t offset, uint64_t length) const;

  // The decoder of kGzipSpan chunks; null for layers without any (every format but SOCI).
  const SpanDecoder* span_decoder() const { return span_decoder_.get(); }

  // Totals, for status and benchmarks.
  size_t chunk_count() const { return chunks_.size(); }
  uint64_t total_file_bytes() const { return total_file_bytes_; }
  // Heap bytes held by this index (approximate, for benchmarks and status).
  size_t MemoryUsage() const;

 private:
  friend class LayerIndexBuilder;
  LayerIndex() = default;

  struct StrRef {
    uint32_t offset = 0;
    uint32_t length = 0;
  };
  struct Node {  // 72 bytes
    uint32_t mode = 0;
    uint32_t nlink = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint64_t size = 0;
    int64_t mtime_sec = 0;
    uint32_t mtime_nsec = 0;
    uint32_t rdev = 0;  // major << 20 | minor (both checked to fit at build time)
    Ino parent = 0;
    StrRef name;         // first name
    uint32_t begin = 0;  // dir: children begin; reg: chunks begin; symlink: target offset
    uint32_t count = 0;  // dir: children count; reg: chunk count; symlink: target length
    uint32_t xattr_begin = 0;
    uint16_t xattr_count = 0;
    uint8_t flags = 0;
  };
  struct XattrRef {
    StrRef name;
    StrRef value;
  };
  struct Dirent {
    StrRef name;
    Ino ino = 0;
  };

  std::string_view Str(StrRef r) const {
    return std::string_view(strings_).substr(r.offset, r.length);
  }
  const Node* NodeOf(Ino ino) const { return IsValid(ino) ? &inodes_[ino - 1] : nullptr; }

  LayerFormat format_ = LayerFormat::kEstargz;
  Digest toc_digest_;
  uint64_t blob_size_ = 0;
  uint64_t data_end_ = 0;
  uint64_t total_file_bytes_ = 0;
  std::optional<ByteRange> prefetch_range_;
  bool no_prefetch_landmark_ = false;

  std::string strings_;  // interned names, link targets, xattr names and values
  PodVector<Node> inodes_;
  PodVector<Dirent> dirents_;
  PodVector<Chunk> chunks_;
  PodVector<XattrRef> xattrs_;
  std::shared_ptr<const SpanDecoder> span_decoder_;
};

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_LAYER_INDEX_H_
