#include "fetcher/format/format_detector.h"

#include <algorithm>

#include "fetcher/codec/zstd.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/status_util.h"
#include "fetcher/format/tail_prefetching_blob_reader.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fmt/format.h"

namespace lazypull::format {

absl::StatusOr<LayerFormat> DetectLayerFormat(std::string_view media_type,
                                              const std::map<std::string, std::string>& annotations,
                                              BlobReader* blob) {
  auto has = [&annotations](std::string_view k) { return annotations.count(std::string(k)) > 0; };
  if (has(kZstdChunkedManifestPositionKey) || has(kLegacyZstdChunkedManifestPositionKey)) {
    return LayerFormat::kZstdChunked;
  }
  if (has(kEstargzTocDigestAnnotation)) return LayerFormat::kEstargz;
  const bool zstd = media_type.ends_with("+zstd") || media_type.ends_with(".zstd");
  const bool gzip = media_type.ends_with("+gzip") || media_type.ends_with(".gzip") ||
                    media_type.ends_with("tar.gzip");
  if (blob != nullptr && (zstd || gzip)) {
    const uint64_t size = blob->Size();
    uint64_t want =
        zstd ? kZstdChunkedFooterSize + codec::kZstdSkippableHeaderSize : kEstargzFooterSize;
    uint64_t len = std::min<uint64_t>(size, want);
    if (len > 0) {
      auto tail = blob->ReadAt(size - len, len);
      if (!tail.ok()) return tail.status();
      if (zstd && ParseZstdChunkedFooter(*tail, size).ok()) return LayerFormat::kZstdChunked;
      if (gzip && ParseEstargzFooter(*tail, size).ok()) return LayerFormat::kEstargz;
    }
  }
  return absl::NotFoundError(fmt::format(
      "layer of media type \"{}\" is not lazy-servable (no eStargz or zstd:chunked index)",
      media_type.substr(0, 200)));
}

absl::StatusOr<LayerIndex> OpenLayerIndex(BlobReader& raw_blob, std::string_view media_type,
                                          const std::map<std::string, std::string>& annotations,
                                          const FormatReadOptions& options) {
  // zstd:chunked annotations give the manifest's exact range: one request without guessing.
  const bool exact = annotations.count(std::string(kZstdChunkedManifestPositionKey)) > 0 ||
                     annotations.count(std::string(kLegacyZstdChunkedManifestPositionKey)) > 0;
  TailPrefetchingBlobReader tail(raw_blob, exact ? 0 : options.speculative_tail_bytes);
  BlobReader& blob = tail;
  auto format = DetectLayerFormat(media_type, annotations, &blob);
  if (!format.ok()) return format.status();
  if (*format == LayerFormat::kZstdChunked) return ReadZstdChunkedIndex(blob, annotations, options);
  std::optional<Digest> toc_digest;
  auto it = annotations.find(std::string(kEstargzTocDigestAnnotation));
  if (it != annotations.end()) {
    auto d = Digest::Parse(it->second);
    if (!d.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("estargz: {} annotation: {}", kEstargzTocDigestAnnotation, Msg(d.status())));
    }
    toc_digest = *d;
  }
  return ReadEstargzIndex(blob, toc_digest, options);
}

}  // namespace lazypull::format
