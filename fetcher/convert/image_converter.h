// ConvertImage: rewrites every layer of an image (or of every platform of an index) into a
// lazy-pullable format and stores the result under a new reference.
//
// Config and history are kept; rootfs.diff_ids change only where the format changes the
// uncompressed tar (eStargz adds landmark and TOC entries; zstd:chunked keeps it identical
// unless prioritized files reorder it).
// Non-tar layers (e.g. attestations) are copied unchanged. The output uses OCI media types
// (a Docker manifest becomes an OCI manifest, a manifest list an OCI index).
#ifndef LAZYPULL_FETCHER_CONVERT_IMAGE_CONVERTER_H_
#define LAZYPULL_FETCHER_CONVERT_IMAGE_CONVERTER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/convert/image_store.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/oci/descriptor.h"

namespace lazypull::convert {

enum class LayerFormat { kEstargz, kZstdChunked };

// "estargz" or "zstd:chunked"; InvalidArgument otherwise.
absl::StatusOr<LayerFormat> ParseLayerFormat(const std::string& text);

struct ConvertOptions {
  LayerFormat format = LayerFormat::kEstargz;
  // The format's prioritized_files apply to every layer (a path absent from a layer is
  // skipped there).
  EstargzOptions estargz;
  ZstdChunkedOptions zstd_chunked;
  // Per source layer, by its blob digest ("sha256:..."): paths to prioritize in that layer
  // only, after the format's own prioritized_files (e.g. recorded by `convert --optimize`).
  std::map<std::string, std::vector<std::string>> prioritized_by_layer;
  // Scratch space for decompressed layers; empty = $TMPDIR (or /tmp).
  std::string work_dir;
};

struct ConvertedLayer {
  oci::Descriptor source;
  oci::Descriptor converted;
  Digest source_diff_id;
  Digest converted_diff_id;
  // Prioritized paths that had no entry in this layer.
  std::vector<std::string> missing_prioritized_files;
};

struct ConvertResult {
  oci::Descriptor root;                // the new manifest or index
  std::vector<ConvertedLayer> layers;  // each distinct source layer once
};

// Reads the image `src` names, converts it, writes it to `dst`. Errors name the layer or
// manifest at fault; a layer whose content does not match its config diff_id is DataLoss.
// Not thread-safe with respect to the stores.
absl::StatusOr<ConvertResult> ConvertImage(ImageStore& src, ImageStore& dst,
                                           const ConvertOptions& options);

// Converts one layer blob (gzip, zstd or plain tar) from `layer` into `out_path` and returns
// its new descriptor (media type and annotations of the format). Used by ConvertImage and by
// tests and benchmarks on single layers.
absl::StatusOr<ConvertedLayer> ConvertLayerFile(BlobReader& layer, const oci::Descriptor& source,
                                                const ConvertOptions& options,
                                                const std::string& scratch_dir,
                                                const std::string& out_path);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_IMAGE_CONVERTER_H_
