// GzipSpans: the span table of a layer served as spans of an UNMODIFIED gzip stream (SOCI): where
// every span lies in the compressed blob and in the uncompressed tar, and the digest of its
// compressed bytes. Whoever needs the whole layer rather than a file's bytes uses it: EROFS lays
// a SOCI layer's files out at their tar offsets, and graduation inflates the whole blob span by
// span, checking each span before it is inflated.
//
// Implemented by the SpanDecoder of a SOCI layer's LayerIndex; GzipSpansOf finds it. Immutable
// and thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_GZIP_SPANS_H_
#define LAZYPULL_FETCHER_FORMAT_GZIP_SPANS_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::format {

struct GzipSpan {
  // The span's compressed bytes (neighbours may share one byte where a deflate block starts
  // mid-byte) and what they inflate to.
  ByteRange compressed;
  ByteRange uncompressed;
  Digest digest;  // sha256 of the compressed bytes
};

class GzipSpans {
 public:
  virtual ~GzipSpans() = default;
  // Spans in blob order; together they cover the blob from the end of the gzip header to its end.
  virtual size_t span_count() const = 0;
  virtual GzipSpan span(size_t i) const = 0;
  // Bytes of the uncompressed layer (the tar).
  virtual uint64_t uncompressed_size() const = 0;
  // Where `chunk`'s first byte sits in the uncompressed layer; nullopt when `chunk` names no
  // span of this layer.
  virtual std::optional<uint64_t> UncompressedOffset(const Chunk& chunk) const = 0;
};

// The span table of `index`, or null when its chunks are not gzip spans (every format but SOCI).
inline const GzipSpans* GzipSpansOf(const LayerIndex& index) {
  return dynamic_cast<const GzipSpans*>(index.span_decoder());
}

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_GZIP_SPANS_H_
