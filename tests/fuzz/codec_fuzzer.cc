// libFuzzer target: gzip and zstd decompression with caps, and chunk decoding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/chunk_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto g = codec::Gunzip(in, {.max_output = 1 << 20});
  if (g.ok() && g->size() > (1 << 20)) abort();
  auto gp = codec::Gunzip(in, {.stop_after = 100});
  if (gp.ok() && gp->size() > 100) abort();
  auto z = codec::ZstdDecompress(in, {.max_output = 1 << 20});
  if (z.ok() && z->size() > (1 << 20)) abort();
  format::Chunk c;
  c.compressed_length = size;
  c.length = size > 0 ? data[0] + 1 : 1;
  c.inner_offset = size > 1 ? data[1] : 0;
  c.has_digest = false;
  for (auto kind : {format::ChunkCompression::kGzipMember, format::ChunkCompression::kZstdFrame}) {
    c.compression = kind;
    auto out = format::DecodeChunk(c, in);
    if (out.ok() && out->size() != c.length) abort();
  }
  return 0;
}
