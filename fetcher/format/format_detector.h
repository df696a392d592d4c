// Chooses the lazy format of a layer from its descriptor (media type + annotations), sniffing
// the blob's footer only when the descriptor is not conclusive, and opens its index.
//
// Rules, in order: zstd:chunked manifest-position annotation (either variant) → zstd:chunked;
// the eStargz toc.digest annotation → eStargz; a +zstd media type whose blob ends with a
// zstd:chunked footer → zstd:chunked; a gzip media type whose blob ends with an eStargz or
// stargz footer → eStargz. Anything else is NotFound ("not lazy-servable"), which callers
// treat as "fall back to a normal pull". Thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_FORMAT_DETECTOR_H_
#define LAZYPULL_FETCHER_FORMAT_FORMAT_DETECTOR_H_

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "fetcher/format/format_options.h"
#include "fetcher/format/layer_index.h"
#include "lazypull/blob_reader.h"

namespace lazypull::format {

// `blob` may be null: then only the descriptor is used. Errors: NotFound when the layer is
// not lazy-servable; BlobReader errors while sniffing keep their code.
absl::StatusOr<LayerFormat> DetectLayerFormat(std::string_view media_type,
                                              const std::map<std::string, std::string>& annotations,
                                              BlobReader* blob);

// DetectLayerFormat, then the matching reader (ReadEstargzIndex with the toc.digest
// annotation, or ReadZstdChunkedIndex).
absl::StatusOr<LayerIndex> OpenLayerIndex(BlobReader& blob, std::string_view media_type,
                                          const std::map<std::string, std::string>& annotations,
                                          const FormatReadOptions& options = {});

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_FORMAT_DETECTOR_H_
