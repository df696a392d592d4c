#include "fetcher/convert/soci_image_indexer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "base/logging.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "fetcher/format/status_util.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"

namespace lazypull::convert {
namespace {

namespace fs = std::filesystem;

bool IsGzipLayer(std::string_view media_type) {
  return media_type == oci::kOciLayerGzip || media_type == oci::kDockerLayerGzip ||
         media_type == oci::kOciLayerNondistributableGzip ||
         media_type == oci::kDockerLayerForeignGzip;
}

oci::Descriptor DescriptorOf(std::string_view media_type, const std::string& bytes) {
  oci::Descriptor d;
  d.media_type = std::string(media_type);
  d.digest = Digest::Of(bytes);
  d.size = static_cast<int64_t>(bytes.size());
  return d;
}

// `d` from `src` as a local file at `path` (a registry store downloads it there, verified; a
// layout's blob is copied in 1 MiB pieces), so it can be read front to back and stored in dst.
absl::Status BlobToFile(ImageStore& src, const oci::Descriptor& d, const std::string& path) {
  auto reader = src.OpenBlob(d, path);
  if (!reader.ok()) return reader.status();
  std::error_code ec;
  if (fs::exists(path, ec)) return absl::OkStatus();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  constexpr uint64_t kPiece = 1 << 20;
  for (uint64_t off = 0; off < (*reader)->Size(); off += kPiece) {
    auto piece = (*reader)->ReadAt(off, std::min(kPiece, (*reader)->Size() - off));
    if (!piece.ok()) return piece.status();
    out.write(piece->data(), static_cast<std::streamsize>(piece->size()));
  }
  out.close();
  if (!out) return absl::InternalError(fmt::format("writing {}: {}", path, strerror(errno)));
  return absl::OkStatus();
}

class Indexer {
 public:
  Indexer(ImageStore& src, ImageStore& dst, const SociIndexOptions& options,
          const SociLayerDone& on_layer)
      : src_(src), dst_(dst), options_(options), on_layer_(on_layer) {}

  absl::StatusOr<SociIndexResult> Run() {
    if (auto st = LoadImage(); !st.ok()) return st;
    SociIndexResult result;
    soci::SociIndex index;
    index.version = options_.version;
    index.build_tool_identifier = options_.build_tool_identifier;
    std::set<Digest> seen;
    for (const oci::Descriptor& layer : manifest_.layers) {
      if (!seen.insert(layer.digest).second) {
        // The same blob twice in one image: one zTOC serves both (an index lists a layer once).
        SociIndexedLayer again;
        again.layer = layer;
        again.skipped = "the same blob as an earlier layer (one index entry serves both)";
        if (on_layer_) on_layer_(again);
        result.layers.push_back(std::move(again));
        continue;
      }
      auto done = IndexLayer(layer);
      if (!done.ok()) return done.status();
      if (done->fine_ztoc) index.extra_blobs.push_back(*done->fine_ztoc);
      if (done->fine_windows) index.extra_blobs.push_back(*done->fine_windows);
      if (done->ztoc) {
        soci::ZtocRef r;
        r.ztoc = *done->ztoc;
        r.layer_digest = layer.digest;
        r.layer_media_type = layer.media_type;
        r.span_size = options_.span_size;
        index.ztocs.push_back(std::move(r));
      }
      if (on_layer_) on_layer_(*done);
      result.layers.push_back(std::move(*done));
    }
    if (index.ztocs.empty()) {
      return absl::FailedPreconditionError(fmt::format(
          "no layer of {} got a zTOC (none is a gzip layer of at least {} bytes): nothing to index",
          manifest_desc_.digest.ToString(), options_.min_layer_size));
    }
    if (auto st = CopyConfig(); !st.ok()) return st;
    if (options_.version == soci::SociIndexVersion::kV1) {
      index.subject = oci::Descriptor();
      index.subject->media_type = manifest_desc_.media_type;
      index.subject->digest = manifest_desc_.digest;
      index.subject->size = manifest_desc_.size;
    }
    auto soci_index = PutSociIndex(index);
    if (!soci_index.ok()) return soci_index.status();
    result.soci_index = *soci_index;
    if (options_.version == soci::SociIndexVersion::kV1) {
      result.image_manifest = manifest_desc_;
      return result;
    }
    auto enabled = PutSociEnabledImage(*soci_index);
    if (!enabled.ok()) return enabled.status();
    result.image_manifest = enabled->first;
    result.root = enabled->second;
    return result;
  }

 private:
  // The platform's image manifest of src's root document.
  absl::Status LoadImage() {
    auto root = src_.GetRoot();
    if (!root.ok()) return root.status();
    std::string bytes = std::move(root->bytes);
    manifest_desc_ = root->descriptor;
    if (oci::IsIndexType(root->descriptor.media_type)) {
      auto index = oci::ParseIndex(bytes, root->descriptor.media_type);
      if (!index.ok()) return index.status();
      auto chosen =
          oci::SelectPlatformManifest(*index, options_.platform.value_or(oci::HostPlatform()));
      if (!chosen.ok()) return chosen.status();
      auto m = src_.GetManifest(*chosen);
      if (!m.ok()) return m.status();
      bytes = std::move(*m);
      manifest_desc_ = *chosen;
      manifest_desc_.annotations.clear();
      manifest_desc_.artifact_type.clear();
      source_index_ = std::move(*index);
    }
    auto manifest = oci::ParseManifest(bytes, manifest_desc_.media_type);
    if (!manifest.ok()) return manifest.status();
    manifest_ = std::move(*manifest);
    manifest_desc_.media_type = manifest_.media_type;
    if (!manifest_desc_.platform) {
      // A single manifest has no platform of its own: the config's (soci does the same).
      auto config = src_.GetBlob(manifest_.config);
      if (!config.ok()) return config.status();
      auto parsed = oci::ImageConfig::Parse(*config);
      if (!parsed.ok()) return parsed.status();
      manifest_desc_.platform = parsed->platform();
      config_bytes_ = std::move(*config);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<SociIndexedLayer> IndexLayer(const oci::Descriptor& layer) {
    SociIndexedLayer out;
    out.layer = layer;
    std::string path = options_.work_dir + "/layer-" + layer.digest.hex();
    if (auto st = BlobToFile(src_, layer, path); !st.ok()) return st;
    struct Remove {
      std::string path;
      ~Remove() {
        std::error_code ec;
        fs::remove(path, ec);
      }
    } remove{path};
    if (!IsGzipLayer(layer.media_type)) {
      out.skipped = fmt::format("not a gzip layer ({})", layer.media_type);
    } else if (static_cast<uint64_t>(layer.size) < options_.min_layer_size) {
      out.skipped =
          fmt::format("smaller than min-layer-size ({} < {})", layer.size, options_.min_layer_size);
    } else {
      auto reader = NewFileBlobReader(path);
      if (!reader.ok()) return reader.status();
      auto ztoc = soci::BuildZtoc(**reader, ZtocOptions(options_.span_size));
      if (!ztoc.ok()) {
        return absl::Status(
            ztoc.status().code(),
            fmt::format("layer {}: {}", layer.digest.ToString(), format::Msg(ztoc.status())));
      }
      auto bytes = soci::SerializeZtoc(*ztoc);
      if (!bytes.ok()) return bytes.status();
      out.ztoc = DescriptorOf(soci::kZtocMediaType, *bytes);
      out.spans = ztoc->span_count();
      out.files = ztoc->files.size();
      if (auto st = dst_.PutBlob(*out.ztoc, *bytes); !st.ok()) return st;
      if (options_.fine_index) {
        if (auto st = AddFineIndex(path, layer, out); !st.ok()) return st;
      }
    }
    // The layer itself, byte for byte (a no-op when dst already has it).
    if (options_.version == soci::SociIndexVersion::kV2) {
      if (auto st = dst_.PutBlobFile(layer, path); !st.ok()) return st;
    }
    return out;
  }

  // The zTOC builder's options for checkpoints every `span_size` (soci's zTOC or the fine
  // index: they differ only there).
  soci::ZtocBuildOptions ZtocOptions(uint64_t span_size) const {
    soci::ZtocBuildOptions zopts;
    zopts.span_size = span_size;
    zopts.large_file_spans = options_.large_file_spans;
    zopts.build_tool_identifier = options_.build_tool_identifier;
    return zopts;
  }

  // Builds and stores the layer's fine index; names it on out.ztoc.
  absl::Status AddFineIndex(const std::string& path, const oci::Descriptor& layer,
                            SociIndexedLayer& out) {
    auto reader = NewFileBlobReader(path);
    if (!reader.ok()) return reader.status();
    const soci::ZtocBuildOptions zopts = ZtocOptions(options_.fine_span_size);
    const std::string windows_path = path + ".windows";
    struct Remove {
      std::string path;
      ~Remove() {
        std::error_code ec;
        fs::remove(path, ec);
      }
    } remove{windows_path};
    auto fine = soci::BuildFineIndex(**reader, zopts, windows_path);
    if (!fine.ok()) {
      return absl::Status(fine.status().code(),
                          fmt::format("layer {}: fine index: {}", layer.digest.ToString(),
                                      format::Msg(fine.status())));
    }
    out.fine_ztoc = DescriptorOf(soci::kFineZtocMediaType, fine->fine);
    out.fine_windows = oci::Descriptor();
    out.fine_windows->media_type = std::string(soci::kFineWindowsMediaType);
    out.fine_windows->digest = fine->windows_digest;
    out.fine_windows->size = static_cast<int64_t>(fine->windows_size);
    out.fine_spans = fine->spans;
    if (auto st = dst_.PutBlob(*out.fine_ztoc, fine->fine); !st.ok()) return st;
    if (auto st = dst_.PutBlobFile(*out.fine_windows, windows_path); !st.ok()) return st;
    auto& a = out.ztoc->annotations;
    a[std::string(soci::kAnnotationFineZtocDigest)] = out.fine_ztoc->digest.ToString();
    a[std::string(soci::kAnnotationFineZtocSize)] = std::to_string(out.fine_ztoc->size);
    a[std::string(soci::kAnnotationFineWindowsDigest)] = out.fine_windows->digest.ToString();
    a[std::string(soci::kAnnotationFineWindowsSize)] = std::to_string(out.fine_windows->size);
    return absl::OkStatus();
  }

  absl::Status CopyConfig() {
    if (options_.version == soci::SociIndexVersion::kV1) return absl::OkStatus();
    if (config_bytes_.empty()) {
      auto config = src_.GetBlob(manifest_.config);
      if (!config.ok()) return config.status();
      config_bytes_ = std::move(*config);
    }
    return dst_.PutBlob(manifest_.config, config_bytes_);
  }

  absl::StatusOr<oci::Descriptor> PutSociIndex(const soci::SociIndex& index) {
    oci::Manifest m = soci::MakeSociIndexManifest(index);
    if (auto st = dst_.PutBlob(m.config, std::string(soci::kEmptyConfig)); !st.ok()) return st;
    std::string bytes = oci::SerializeManifest(m);
    oci::Descriptor d = DescriptorOf(oci::kOciManifest, bytes);
    if (auto st = dst_.PutManifest(d, bytes); !st.ok()) return st;
    return d;
  }

  // The annotated image manifest and the image index bundling it with the SOCI index.
  absl::StatusOr<std::pair<oci::Descriptor, oci::Descriptor>> PutSociEnabledImage(
      const oci::Descriptor& soci_index) {
    oci::Manifest m = manifest_;
    // As soci: OCI media types for manifest and config (registries dislike mixing Docker and
    // OCI documents in one index); layers unchanged.
    m.media_type = std::string(oci::kOciManifest);
    m.media_type_in_json = true;
    m.config.media_type = std::string(oci::kOciConfig);
    m.annotations[std::string(soci::kAnnotationIndexDigest)] = soci_index.digest.ToString();
    std::string bytes = oci::SerializeManifest(m);
    oci::Descriptor image = DescriptorOf(oci::kOciManifest, bytes);
    image.platform = manifest_desc_.platform;
    image.annotations = m.annotations;
    if (auto st = dst_.PutManifest(image, bytes); !st.ok()) return st;

    oci::Descriptor soci = soci_index;
    soci.artifact_type = std::string(soci::kSociIndexV2);
    soci.platform = manifest_desc_.platform;
    soci.annotations[std::string(soci::kAnnotationImageManifestDigest)] = image.digest.ToString();

    oci::Index index;
    if (source_index_) {
      index.annotations = source_index_->annotations;
      index.extra = source_index_->extra;
    }
    index.media_type = std::string(oci::kOciIndex);
    index.media_type_in_json = true;
    // The image first: containerd takes the first manifest matching the platform.
    index.manifests = {image, soci};
    std::string index_bytes = oci::SerializeIndex(index);
    oci::Descriptor root = DescriptorOf(oci::kOciIndex, index_bytes);
    if (auto st = dst_.PutRoot(root, index_bytes); !st.ok()) return st;
    return std::make_pair(image, root);
  }

  ImageStore& src_;
  ImageStore& dst_;
  const SociIndexOptions& options_;
  const SociLayerDone& on_layer_;
  oci::Descriptor manifest_desc_;
  oci::Manifest manifest_;
  std::optional<oci::Index> source_index_;
  std::string config_bytes_;
};

}  // namespace

absl::StatusOr<SociIndexResult> CreateSociIndex(ImageStore& src, ImageStore& dst,
                                                const SociIndexOptions& options,
                                                const SociLayerDone& on_layer) {
  if (options.work_dir.empty()) {
    return absl::InvalidArgumentError("soci index create: no work directory");
  }
  if (options.span_size == 0) {
    return absl::InvalidArgumentError("soci index create: span size must be positive");
  }
  if (options.fine_index && options.fine_span_size == 0) {
    return absl::InvalidArgumentError("soci index create: fine span size must be positive");
  }
  Indexer indexer(src, dst, options, on_layer);
  auto result = indexer.Run();
  if (result.ok()) {
    LogInfo("soci index created",
            {{"index", result->soci_index.digest.ToString()},
             {"manifest", result->image_manifest.digest.ToString()},
             {"version", options.version == soci::SociIndexVersion::kV1 ? "v1" : "v2"}});
  }
  return result;
}

}  // namespace lazypull::convert
