#include "fetcher/format/soci/span_slices.h"

#include <algorithm>

namespace lazypull::soci {

std::vector<SpanSlice> SlicesForRange(const Ztoc& ztoc, uint64_t offset, uint64_t length) {
  std::vector<SpanSlice> out;
  if (length == 0 || offset > ztoc.uncompressed_archive_size ||
      length > ztoc.uncompressed_archive_size - offset || ztoc.span_count() == 0) {
    return out;
  }
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  for (size_t i = ztoc.SpanForUncompressedOffset(offset); i < ztoc.span_count() && pos < end; ++i) {
    const ByteRange ur = ztoc.SpanUncompressedRange(i);
    if (ur.end() <= pos) continue;
    const uint64_t to = std::min(end, ur.end());
    out.push_back(SpanSlice{.span = i,
                            .span_offset = pos - ur.offset,
                            .range_offset = pos - offset,
                            .length = to - pos});
    pos = to;
  }
  if (pos != end) out.clear();  // spans do not cover the range (cannot happen for a parsed zTOC)
  return out;
}

}  // namespace lazypull::soci
