// Streams a layer blob (gzip, zstd or plain tar) into an uncompressed tar file, computing the
// DiffID on the way. The converter needs the plain tar on disk because eStargz reorders
// entries (prioritized files) and both writers read payloads by offset.
#ifndef LAZYPULL_FETCHER_CONVERT_LAYER_DECOMPRESSOR_H_
#define LAZYPULL_FETCHER_CONVERT_LAYER_DECOMPRESSOR_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "fetcher/convert/blob_sink.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::convert {

enum class InputCompression { kNone, kGzip, kZstd };

// Looks at the first bytes of `blob`: 1f 8b = gzip, 28 b5 2f fd = zstd, else plain tar.
absl::StatusOr<InputCompression> SniffCompression(BlobReader& blob);

struct DecompressedLayer {
  Digest diff_id;  // sha256 of the uncompressed stream
  uint64_t size = 0;
};

// Decompresses all of `blob` (every gzip member / zstd frame; skippable frames ignored) into
// `out` and finishes it. DataLoss for corrupt or truncated input, naming `what` (e.g. the
// layer digest).
absl::StatusOr<DecompressedLayer> DecompressLayer(BlobReader& blob, InputCompression compression,
                                                  BlobSink& out, const std::string& what);

}  // namespace lazypull::convert

#endif  // LAZYPULL_FETCHER_CONVERT_LAYER_DECOMPRESSOR_H_
