// Opening a SOCI layer for lazy serving: the zTOC that belongs to a layer (found by SOCI index
// discovery) is recorded in the layer descriptor's annotations, so the resolved layer persisted
// with a snapshot re-opens the same way at restart; OpenSociLayerIndex fetches it, checks its
// digest, parses it as untrusted input and builds the LayerIndex (soci_layer_index.h).
//
// Thread-safe (pure functions; the BlobReader is thread-safe).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_OPEN_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_OPEN_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/format/layer_index.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/oci/descriptor.h"
#include "lazypull/blob_reader.h"

namespace lazypull::soci {

// Annotations lazypull adds to a layer descriptor it serves through a zTOC. Not under
// containerd.io/snapshot/, so no Prepare label can set them.
inline constexpr char kZtocDigestAnnotation[] = "dev.lazypull.soci.ztoc-digest";
inline constexpr char kZtocSizeAnnotation[] = "dev.lazypull.soci.ztoc-size";

// Records `ztoc` (digest and size) in `annotations`.
void AddZtocAnnotations(const oci::Descriptor& ztoc,
                        std::map<std::string, std::string>& annotations);

// The zTOC recorded in `annotations`: nullopt when there is none, InvalidArgument when the
// annotations are malformed (bad digest, size not a positive integer).
absl::StatusOr<std::optional<oci::Descriptor>> ZtocFromAnnotations(
    const std::map<std::string, std::string>& annotations);

// Reads `ztoc` (its exact size, at most limits.max_ztoc_bytes) from `ztoc_blob`, checks it
// against ztoc.digest, parses it (ParseZtoc) and checks that it describes a blob of
// `layer_size` compressed bytes, then builds the layer's index. Errors: DataLoss for a digest
// mismatch or a zTOC of another blob size (the message says which), ResourceExhausted for a
// zTOC over the limit, ParseZtoc's and BuildSociLayerIndex's errors (prefixed "ztoc
// <digest>: "), the reader's errors.
absl::StatusOr<format::LayerIndex> OpenSociLayerIndex(BlobReader& ztoc_blob,
                                                      const oci::Descriptor& ztoc,
                                                      uint64_t layer_size,
                                                      const ZtocLimits& limits = {});

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_OPEN_H_
