// Conversions shared by the eStargz and zstd:chunked readers: TOC entry fields → builder
// inputs, with range checks. Internal to fetcher/format. Stateless; thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_TOC_COMMON_H_
#define LAZYPULL_FETCHER_FORMAT_TOC_COMMON_H_

#include <array>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index_builder.h"
#include "fetcher/format/toc_json.h"

namespace lazypull::format {

// mode/uid/gid/modtime/xattrs of `e`. InvalidArgument (naming the entry) for uid/gid above
// 2^32-1, an unparsable modtime or non-base64 xattr values.
absl::StatusOr<EntryMeta> MetaFromEntry(const TocEntry& e);

// Parses an RFC 3339 timestamp with optional fractional seconds ("" → 0).
absl::Status ParseRfc3339(std::string_view text, int64_t* sec, uint32_t* nsec);

// Parses "sha256:<64 hex>" into raw bytes. InvalidArgument naming `what` otherwise.
absl::Status ParseSha256(std::string_view text, std::string_view what,
                         std::array<uint8_t, 32>* out);

// The landmark (kPrefetchLandmark or kNoPrefetchLandmark) that TOC path `name` names once
// normalized ("./.prefetch.landmark" too), or "" for every other path, invalid ones included
// (the builder rejects those).
std::string_view Landmark(std::string_view name);

// Adds every non-regular, non-chunk entry type (dir, symlink, hardlink, char, block, fifo) to
// the builder. InvalidArgument for an unknown type.
absl::Status AddNonRegular(LayerIndexBuilder& builder, const TocEntry& e, const EntryMeta& meta);

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_TOC_COMMON_H_
