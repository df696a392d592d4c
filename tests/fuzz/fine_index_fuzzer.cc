// libFuzzer target: ParseFineFrame over any bytes (lazypull's fine SOCI index blob, after
// zstd, comes from registries; its digest is checked first, but the parser must hold on its
// own). A frame it accepts has every window non-empty, within the cap, in order and not
// overlapping, and serializes back to exactly the same bytes. The same bytes also go through
// DecodeFineBlob (zstd first), capped, and an accepted frame's zTOC through ParseZtoc with
// windowless checkpoints.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/ztoc_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::soci;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  FineLimits limits;
  limits.max_ztoc_bytes = 1 << 20;
  limits.max_windows = 1 << 12;
  (void)DecodeFineBlob(bytes, limits);
  auto frame = ParseFineFrame(bytes, limits);
  if (!frame.ok()) return 0;
  if (frame->windows.size() > limits.max_windows) abort();
  if (frame->ztoc.size() > limits.max_ztoc_bytes) abort();
  uint64_t next = 0;
  for (const FineWindow& w : frame->windows) {
    if (w.length == 0 || w.length > kMaxFineWindowBytes || w.offset < next) abort();
    next = w.offset + w.length;
  }
  auto back = SerializeFineFrame(*frame);
  if (!back.ok() || *back != bytes) abort();
  // The zTOC inside, as the daemon parses it (windowless checkpoints).
  ZtocLimits zlimits;
  zlimits.max_ztoc_bytes = 1 << 20;
  zlimits.max_files = 1 << 12;
  zlimits.windowless_checkpoints = true;
  auto z = ParseZtoc(frame->ztoc, zlimits);
  if (!z.ok()) return 0;
  if (z->span_digests.size() != z->span_count() || z->span_count() == 0) abort();
  for (size_t i = 0; i < z->span_count(); ++i) {
    if (z->checkpoints.at(i).window.size() != kWindowSize) abort();
    if (z->SpanCompressedRange(i).offset >= z->compressed_archive_size) abort();
  }
  return 0;
}
