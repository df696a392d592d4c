// ParseZtoc: a SOCI zTOC (untrusted bytes, e.g. fetched from a registry) to a validated Ztoc.
//
// Two layers of checking: flatbuffers' Verifier first (every offset, vector and string inside
// the buffer), then our own consistency checks, so that everything downstream may rely on:
//   - gzip compression (Uncompressed zTOCs are Unimplemented), positive compressed size;
//   - at most `max_files` entries, each of a known type, with offset + size inside
//     uncompressed_archive_size and devices numbers < 2^32; after sorting by offset (as soci
//     does) every entry starts at or after the previous entry's end rounded up to 512 (so
//     entries never overlap);
//   - checkpoints valid on their own (ZinfoCheckpoints::Parse), one span digest (sha256) per
//     checkpoint, max_span_id = checkpoints - 1, every span starting inside the blob, span
//     lengths (compressed and uncompressed) at most `max_span_bytes`.
// Errors: InvalidArgument naming the first problem (prefixed with "ztoc: "), ResourceExhausted
// when a limit is exceeded, Unimplemented for non-gzip zTOCs. Thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_PARSER_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_PARSER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/soci/ztoc.h"

namespace lazypull::soci {

struct ZtocLimits {
  uint64_t max_ztoc_bytes = 512ull << 20;
  uint64_t max_files = 4u << 20;
  uint64_t max_checkpoints = 1u << 16;  // 2 GiB of windows; the byte cap binds first
  // One span's compressed or uncompressed length (soci's default span is 4 MiB of
  // uncompressed data, ending at the next deflate block boundary).
  uint64_t max_span_bytes = 256ull << 20;
  // The checkpoints blob is lazypull's windowless one (a fine index's zTOC: see
  // ZinfoCheckpoints::ParseWindowless), not soci's.
  bool windowless_checkpoints = false;
};

absl::StatusOr<Ztoc> ParseZtoc(std::string_view bytes, const ZtocLimits& limits = {});

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_PARSER_H_
