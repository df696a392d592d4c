#include "fetcher/layer_reader/chunk_assembler.h"

#include <algorithm>
#include <utility>

#include "fmt/format.h"

namespace lazypull {

ChunkAssembler::ChunkAssembler(std::vector<Group> groups, OnChunk on_chunk)
    : groups_(std::move(groups)), on_chunk_(std::move(on_chunk)), state_(groups_.size()) {
  for (size_t g = 0; g < groups_.size(); ++g) state_[g].pos = groups_[g].range.offset;
}

std::vector<ByteRange> ChunkAssembler::Ranges() const {
  std::vector<ByteRange> out;
  out.reserve(groups_.size());
  for (const Group& g : groups_) out.push_back(g.range);
  return out;
}

absl::Status ChunkAssembler::Feed(uint64_t offset, std::string_view data) {
  auto it = std::partition_point(groups_.begin(), groups_.end(),
                                 [&](const Group& g) { return g.range.end() <= offset; });
  const size_t g = it - groups_.begin();
  if (it == groups_.end() || offset != state_[g].pos || data.size() > it->range.end() - offset) {
    return absl::InternalError(fmt::format(
        "streamed bytes [{}, +{}) do not continue a requested range", offset, data.size()));
  }
  const Group& group = *it;
  State& st = state_[g];
  const uint64_t end = offset + data.size();
  if (st.next < group.chunks.size()) {
    const uint64_t keep_from = std::max(offset, group.chunks[st.next].offset);
    if (keep_from < end) {
      if (st.buf.empty()) st.buf_start = keep_from;
      st.buf.append(data.substr(keep_from - offset));
    }
  }
  st.pos = end;
  while (st.next < group.chunks.size() && group.chunks[st.next].end() <= st.pos) {
    const ByteRange& c = group.chunks[st.next];
    absl::Status s =
        on_chunk_(g, st.next, std::string_view(st.buf).substr(c.offset - st.buf_start, c.length));
    ++st.next;
    if (!s.ok()) return s;
    if (st.next == group.chunks.size()) {
      st.buf.clear();
      st.buf.shrink_to_fit();
      break;
    }
    // Drop what the next chunk does not need.
    const uint64_t drop_to = std::min(group.chunks[st.next].offset, st.pos);
    if (drop_to > st.buf_start) {
      st.buf.erase(0, drop_to - st.buf_start);
      st.buf_start = drop_to;
    }
  }
  return absl::OkStatus();
}

}  // namespace lazypull
