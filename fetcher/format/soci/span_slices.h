// SlicesForRange: which spans of a SOCI layer hold a range of the uncompressed tar, and where
// in each span's inflated bytes — the mapping a lazy read of a file through a zTOC needs.
//
// Design for serving SOCI layers lazily (issue 19; implemented by soci_layer_index.h,
// chunk_decoder.h DecodeSpan, LayerReader; the EROFS backend serves SOCI layers through its
// usual blob layout, not the tar layout described last):
//   - LayerIndex: a zTOC entry becomes a LayerIndex entry through LayerIndexBuilder as eStargz
//     entries do (names cleaned by the builder; whiteouts, opaque dirs, hardlinks handled
//     there; xattrs = ZtocFile::Xattrs(); mode & 07777; mtime from mod_time; devices from
//     devmajor/minor). A regular file's chunk list = SlicesForRange(file range): one Chunk per
//     slice with a new ChunkCompression::kGzipSpan: compressed range = the span's
//     (SpanCompressedRange), inner_offset = slice.span_offset, length = slice.length, digest =
//     the span digest (sha256 of the COMPRESSED span). LayerIndexBuilder must accept, for
//     kGzipSpan only, chunks of different files sharing one compressed range when they share
//     its digest (today it refuses overlapping ranges and a digest with two lengths: for
//     kGzipSpan the "length" of a digest is the span's compressed length). LayerFormat gains
//     kSoci ("soci"); toc_digest = the zTOC's digest from the SOCI index manifest.
//   - Decoding: the decoder needs the checkpoint of the span: the LayerIndex keeps the Ztoc's
//     ZinfoCheckpoints (shared_ptr) and maps a chunk to its span by compressed offset (binary
//     search on resume offsets). DecodeChunk(kGzipSpan): sha256(compressed) == digest FIRST,
//     then InflateSpan(checkpoint, bytes, span length, expect_block_end unless last span),
//     then slice [inner_offset, +length).
//   - Cache and single flight: the unit of fetch, verification and caching is the SPAN, not
//     the slice: LayerReader keys kGzipSpan chunks by span digest alone; the ChunkCache stores
//     the COMPRESSED span under its span digest (its own sha256, so the cache's re-verification
//     on open keeps working) and a small per-layer LRU keeps recently inflated spans in memory,
//     so neighbouring files in one span inflate it once. Multi-range requests, readahead,
//     prefetch and background fetch operate on span ranges unchanged.
//   - EROFS: the data device is the uncompressed tar (files at their tar offsets, 512-aligned):
//     the blob FUSE file serves [offset, +len) of the tar through SlicesForRange, and
//     graduation inflates the whole blob and checks the diff_id.
// Thread-safe (pure functions of an immutable Ztoc).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SPAN_SLICES_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SPAN_SLICES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fetcher/format/soci/ztoc.h"

namespace lazypull::soci {

struct SpanSlice {
  size_t span = 0;            // span index
  uint64_t span_offset = 0;   // offset in the span's inflated bytes
  uint64_t range_offset = 0;  // offset in the requested range
  uint64_t length = 0;        // > 0
};

// The slices of uncompressed bytes [offset, offset + length), in order, tiling the range
// exactly. Empty if `length` is 0 or the range is not inside [0, uncompressed_archive_size)
// (ParseZtoc guarantees that for every entry of a zTOC).
std::vector<SpanSlice> SlicesForRange(const Ztoc& ztoc, uint64_t offset, uint64_t length);

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SPAN_SLICES_H_
