// libFuzzer target: ParseZtoc over any bytes (SOCI zTOCs come from registries). A zTOC it
// accepts must keep the promises the readers rely on: entries sorted, inside the archive and
// not overlapping; one digest per span; spans inside the blob, capped and in order; and it
// must serialize and parse back to the same content. The same bytes also go to
// ParseSociIndex (the SOCI index manifest, also from registries): an accepted index names
// each layer once, with a zTOC within the size cap, and survives a write/read round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/format/soci/ztoc_serializer.h"

namespace {

void CheckSociIndex(std::string_view bytes) {
  using namespace lazypull::soci;
  auto index = ParseSociIndex(bytes, 1 << 20);
  if (!index.ok()) return;
  for (size_t i = 0; i < index->ztocs.size(); ++i) {
    const ZtocRef& r = index->ztocs[i];
    if (r.ztoc.size <= 0 || r.ztoc.size > (1 << 20)) abort();
    if (index->Find(r.layer_digest) != &r) abort();  // each layer once
  }
  auto back = ParseSociIndex(lazypull::oci::SerializeManifest(MakeSociIndexManifest(*index)));
  if (!back.ok() || back->ztocs.size() != index->ztocs.size() || back->version != index->version) {
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::soci;
  CheckSociIndex(std::string_view(reinterpret_cast<const char*>(data), size));
  ZtocLimits limits;
  limits.max_ztoc_bytes = 1 << 20;
  limits.max_files = 1 << 12;
  limits.max_span_bytes = 64 << 20;
  auto z = ParseZtoc(std::string_view(reinterpret_cast<const char*>(data), size), limits);
  if (!z.ok()) return 0;
  uint64_t next = 0;
  for (const ZtocFile& f : z->files) {
    if (f.uncompressed_offset < next) abort();
    if (f.uncompressed_offset + f.uncompressed_size > z->uncompressed_archive_size) abort();
    next = (f.uncompressed_offset + f.uncompressed_size + 511) / 512 * 512;
    (void)f.Xattrs();
  }
  if (z->span_digests.size() != z->span_count() || z->span_count() == 0) abort();
  uint64_t prev_out = 0;
  for (size_t i = 0; i < z->span_count(); ++i) {
    const auto cr = z->SpanCompressedRange(i);
    const auto ur = z->SpanUncompressedRange(i);
    if (cr.offset >= z->compressed_archive_size) abort();
    if (cr.length > limits.max_span_bytes || ur.length > limits.max_span_bytes) abort();
    if (i > 0 && ur.offset <= prev_out) abort();
    prev_out = ur.offset;
    if (z->SpanForUncompressedOffset(ur.offset) != i) abort();
    if (z->checkpoints.at(i).window.size() != kWindowSize) abort();
  }
  auto bytes = SerializeZtoc(*z);
  if (!bytes.ok()) abort();
  auto back = ParseZtoc(*bytes, limits);
  if (!back.ok()) abort();
  if (back->files.size() != z->files.size() || back->span_digests != z->span_digests ||
      back->checkpoints.blob() != z->checkpoints.blob() ||
      back->uncompressed_archive_size != z->uncompressed_archive_size) {
    abort();
  }
  return 0;
}
