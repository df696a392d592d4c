// Shared by the fuzz targets: walks a LayerIndex through every accessor the FUSE layer uses,
// so an index that violates its own invariants crashes under ASan instead of going unseen.
#ifndef LAZYPULL_TESTS_FUZZ_FUZZ_UTIL_H_
#define LAZYPULL_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdlib>

#include "fetcher/format/chunk_decoder.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"

namespace lazypull::format {

inline void ExerciseIndex(const LayerIndex& index, BlobReader* blob) {
  size_t decoded = 0;
  for (Ino ino = 1; ino <= index.inode_count(); ++ino) {
    auto attr = index.GetAttr(ino);
    if (!attr) abort();
    for (size_t i = 0; i < index.ChildCount(ino); ++i) {
      DirEntry d = index.Child(ino, i);
      if (!index.IsValid(d.ino)) abort();
      auto found = index.Lookup(ino, d.name);
      if (!found || *found != d.ino) abort();
    }
    std::string path = index.Path(ino);
    if (!index.LookupPath(path)) abort();
    (void)index.SymlinkTarget(ino);
    (void)index.Xattrs(ino);
    uint64_t expect = 0;
    for (const Chunk& c : index.Chunks(ino)) {
      if (c.file_offset != expect) abort();
      expect += c.length;
      if (blob != nullptr && decoded < 16 && c.compression != ChunkCompression::kZeros &&
          c.compressed_length < (1 << 20) && c.length < (16 << 20)) {
        auto bytes = blob->ReadAt(c.compressed_offset, c.compressed_length);
        if (!bytes.ok()) abort();  // the index guarantees ranges inside the blob
        auto out = DecodeChunk(c, *bytes);
        if (out.ok() && out->size() != c.length) abort();
        ++decoded;
      }
    }
    if (!index.Chunks(ino).empty() && expect != attr->size) abort();
    (void)index.ChunksInRange(ino, attr->size / 2, 4096);
  }
}

}  // namespace lazypull::format

#endif  // LAZYPULL_TESTS_FUZZ_FUZZ_UTIL_H_
