// libFuzzer target: the gzip checkpoint blob parser (both versions), span inflation from a
// checkpoint over hostile compressed bytes, and the zTOC builder (`index create`) over a
// hostile gzip layer. First byte: bit 0 picks the parser (0) or the others; bit 5 then picks
// the builder (the next two bytes: ZtocBuildOptions::large_file_spans in 512-byte blocks, 0 =
// off); for inflation, bits 1..3 are the checkpoint's bits, bit 4 expect_block_end, the next
// two bytes the uncompressed length.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fetcher/format/soci/span_inflater.h"
#include "fetcher/format/soci/zinfo_checkpoints.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "lazypull/blob_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::soci;
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((mode & 1) == 0) {
    auto z = ZinfoCheckpoints::Parse(std::string(rest), 64);
    if (!z.ok()) return 0;
    if (z->size() == 0 || z->at(0).uncompressed_offset != 0) abort();
    for (size_t i = 0; i < z->size(); ++i) {
      const Checkpoint c = z->at(i);
      if (c.window.size() != kWindowSize || c.bits > 7) abort();
      if (i > 0 && (c.compressed_offset <= z->at(i - 1).compressed_offset ||
                    c.uncompressed_offset <= z->at(i - 1).uncompressed_offset)) {
        abort();
      }
      if (z->IndexForUncompressedOffset(c.uncompressed_offset) != i) abort();
    }
    return 0;
  }
  if (rest.size() < 2) return 0;
  if (mode & 32) {
    ZtocBuildOptions options;
    options.span_size = 1000;
    options.large_file_spans =
        512 * (static_cast<uint8_t>(rest[0]) | (static_cast<uint8_t>(rest[1]) << 8));
    options.read_size = 4096;
    auto blob = lazypull::NewStringBlobReader(std::string(rest.substr(2)));
    auto z = BuildZtoc(*blob, options);
    if (!z.ok()) return 0;
    // Whatever the checkpoints asked for: one digest per span, offsets strictly increasing.
    if (z->span_digests.size() != z->checkpoints.size() || z->checkpoints.size() == 0) abort();
    for (size_t i = 1; i < z->checkpoints.size(); ++i) {
      if (z->checkpoints.at(i).compressed_offset <= z->checkpoints.at(i - 1).compressed_offset ||
          z->checkpoints.at(i).uncompressed_offset <=
              z->checkpoints.at(i - 1).uncompressed_offset) {
        abort();
      }
    }
    return 0;
  }
  const uint64_t length = static_cast<uint8_t>(rest[0]) | (static_cast<uint8_t>(rest[1]) << 8);
  rest.remove_prefix(2);
  const std::string window(kWindowSize, 'w');
  Checkpoint cp;
  cp.bits = (mode >> 1) & 7;
  cp.compressed_offset = 1;
  cp.window = window;
  SpanInflateOptions options;
  options.expect_block_end = (mode >> 4) & 1;
  auto out = InflateSpan(cp, rest, length, options);
  if (out.ok() && out->size() != length) abort();
  return 0;
}
