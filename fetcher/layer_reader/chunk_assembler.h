// ChunkAssembler: turns the bytes of a streamed range fetch (BlobReader::StreamRanges) back
// into whole compressed chunks, handing each one over as soon as its last byte arrives, so a
// reader waiting for the first chunk of a long request is served before the request ends.
//
// Each group is one requested range plus the compressed ranges of the chunks inside it,
// sorted by offset (they may overlap or leave gaps, which are dropped). A group buffers only
// from the start of its first incomplete chunk: memory is about one chunk per group.
//
// Thread-safety: Feed may be called concurrently for DIFFERENT groups (as StreamRanges may),
// never concurrently for the same group; `on_chunk` runs on the feeding thread.
#ifndef LAZYPULL_FETCHER_LAYER_READER_CHUNK_ASSEMBLER_H_
#define LAZYPULL_FETCHER_LAYER_READER_CHUNK_ASSEMBLER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "lazypull/blob_reader.h"

namespace lazypull {

class ChunkAssembler {
 public:
  struct Group {
    ByteRange range;
    std::vector<ByteRange> chunks;  // inside `range`, sorted by offset
  };
  // Called once per chunk with its compressed bytes (valid during the call). An error aborts
  // the stream (Feed returns it).
  using OnChunk =
      std::function<absl::Status(size_t group, size_t chunk, std::string_view compressed)>;

  // Groups must be sorted by range offset and disjoint.
  ChunkAssembler(std::vector<Group> groups, OnChunk on_chunk);

  // The ranges to request, in group order.
  std::vector<ByteRange> Ranges() const;

  // A BlobReader::Sink: bytes blob[offset, offset + data.size()). Internal if they do not
  // continue their group where it stands (a broken StreamRanges contract).
  absl::Status Feed(uint64_t offset, std::string_view data);

  // Whether chunk `chunk` of group `group` has been handed over.
  bool Done(size_t group, size_t chunk) const { return chunk < state_[group].next; }

 private:
  struct State {
    uint64_t pos = 0;  // blob offset of the next byte expected
    size_t next = 0;   // first chunk not yet handed over
    uint64_t buf_start = 0;
    std::string buf;  // bytes [buf_start, pos) still needed
  };
  const std::vector<Group> groups_;
  const OnChunk on_chunk_;
  std::vector<State> state_;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_CHUNK_ASSEMBLER_H_
