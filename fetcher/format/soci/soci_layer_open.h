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
#include <memory>
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

// Records `ztoc` (digest and size) in `annotations`, and its fine index (fine_index.h) when
// the zTOC descriptor's own annotations name one.
void AddZtocAnnotations(const oci::Descriptor& ztoc,
                        std::map<std::string, std::string>& annotations);

// The zTOC recorded in `annotations`: nullopt when there is none, InvalidArgument when the
// annotations are malformed (bad digest, size not a positive integer).
absl::StatusOr<std::optional<oci::Descriptor>> ZtocFromAnnotations(
    const std::map<std::string, std::string>& annotations);

// A layer's fine index: the fine zTOC blob and the windows blob.
struct FineRef {
  oci::Descriptor fine;
  oci::Descriptor windows;
};

// The fine index recorded in `annotations` (the dev.lazypull.soci.fine-* names of
// fine_index.h): nullopt when there is none, InvalidArgument when they are malformed or
// incomplete.
absl::StatusOr<std::optional<FineRef>> FineFromAnnotations(
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

// Opens the layer through its fine index: reads the fine blob whole (at most
// limits.max_ztoc_bytes), checks its digest, decodes it (DecodeFineBlob, capped), parses its
// zTOC (ParseZtoc, untrusted) and checks one window per checkpoint, every window inside
// `windows_blob` (which must have ref.windows.size bytes) and the zTOC's blob size; the index
// then fetches each span's window from `windows_blob` (FineWindows), verified before use. Its
// toc_digest() is the fine blob's digest. Errors as OpenSociLayerIndex's (prefixed "fine
// index <digest>: "), plus DecodeFineBlob's.
absl::StatusOr<format::LayerIndex> OpenFineSociLayerIndex(BlobReader& fine_blob,
                                                          std::shared_ptr<BlobReader> windows_blob,
                                                          const FineRef& ref, uint64_t layer_size,
                                                          const ZtocLimits& limits = {});

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_SOCI_LAYER_OPEN_H_
