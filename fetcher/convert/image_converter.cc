#include "fetcher/convert/image_converter.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "base/logging.h"
#include "fetcher/convert/layer_decompressor.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"

namespace lazypull::convert {
namespace {

namespace fs = std::filesystem;

// A scratch directory removed with everything in it when the object dies.
class ScratchDir {
 public:
  static absl::StatusOr<ScratchDir> Create(const std::string& parent) {
    std::string base = parent;
    if (base.empty()) {
      const char* tmp = getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    std::string templ = base + "/lazypull-convert-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) {
      return absl::InternalError(fmt::format("mkdtemp in {}: {}", base, strerror(errno)));
    }
    return ScratchDir(templ);
  }
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ~ScratchDir() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

void RemoveQuietly(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

// Annotations of another lazy format that would lie about the new blob.
bool IsStaleFormatAnnotation(const std::string& key) {
  return absl::StartsWith(key, "containerd.io/snapshot/stargz/") ||
         absl::StartsWith(key, "io.containers.estargz.") ||
         absl::StartsWith(key, "io.github.containers.zstd-chunked.") ||
         absl::StartsWith(key, "io.containers.zstd-chunked.") ||
         key == kLazypullPrefetchRangeAnnotation;
}

class Converter {
 public:
  Converter(ImageStore& src, ImageStore& dst, const ConvertOptions& options,
            const std::string& scratch)
      : src_(src), dst_(dst), options_(options), scratch_(scratch) {}

  absl::StatusOr<ConvertResult> Run() {
    auto root = src_.GetRoot();
    if (!root.ok()) return root.status();
    auto media_type = RootMediaType(*root);
    if (!media_type.ok()) return media_type.status();
    ConvertResult result;
    absl::StatusOr<std::pair<oci::Descriptor, std::string>> converted;
    if (oci::IsIndexType(*media_type)) {
      converted = ConvertIndex(root->bytes, *media_type);
    } else {
      converted = ConvertManifest(root->bytes, *media_type);
    }
    if (!converted.ok()) return converted.status();
    if (auto st = dst_.PutRoot(converted->first, converted->second); !st.ok()) return st;
    result.root = converted->first;
    for (auto& [digest, layer] : layers_) result.layers.push_back(layer);
    return result;
  }

 private:
  absl::StatusOr<std::string> RootMediaType(const RootDocument& root) {
    auto sniffed = oci::SniffMediaType(root.bytes);
    if (!sniffed.ok()) return sniffed.status();
    if (!sniffed->empty()) return *sniffed;
    if (!root.descriptor.media_type.empty()) return root.descriptor.media_type;
    return absl::InvalidArgumentError("root document has no media type");
  }

  absl::StatusOr<std::pair<oci::Descriptor, std::string>> ConvertIndex(const std::string& bytes,
                                                                       const std::string& mt) {
    auto index = oci::ParseIndex(bytes, mt);
    if (!index.ok()) return index.status();
    oci::Index out = *index;
    out.media_type = std::string(oci::kOciIndex);
    out.media_type_in_json = true;
    for (size_t i = 0; i < out.manifests.size(); ++i) {
      oci::Descriptor& d = out.manifests[i];
      if (!oci::IsManifestType(d.media_type)) {
        return absl::UnimplementedError(fmt::format(
            "index entry {} ({}) is not an image manifest; nested indexes are not supported", i,
            d.media_type));
      }
      auto manifest_bytes = src_.GetManifest(d);
      if (!manifest_bytes.ok()) return manifest_bytes.status();
      auto converted = ConvertManifest(*manifest_bytes, d.media_type);
      if (!converted.ok()) return converted.status();
      if (auto st = dst_.PutManifest(converted->first, converted->second); !st.ok()) return st;
      oci::Descriptor nd = converted->first;
      nd.platform = d.platform;
      nd.annotations = d.annotations;
      nd.urls = d.urls;
      nd.artifact_type = d.artifact_type;
      d = nd;
    }
    std::string out_bytes = oci::SerializeIndex(out);
    oci::Descriptor desc;
    desc.media_type = out.media_type;
    desc.digest = Digest::Of(out_bytes);
    desc.size = out_bytes.size();
    return std::make_pair(desc, out_bytes);
  }

  absl::StatusOr<std::pair<oci::Descriptor, std::string>> ConvertManifest(const std::string& bytes,
                                                                          const std::string& mt) {
    auto manifest = oci::ParseManifest(bytes, mt);
    if (!manifest.ok()) return manifest.status();
    oci::Manifest out = *manifest;
    out.media_type = std::string(oci::kOciManifest);
    out.media_type_in_json = true;

    auto config_bytes = src_.GetBlob(manifest->config);
    if (!config_bytes.ok()) return config_bytes.status();
    const bool image_config = oci::IsConfigType(manifest->config.media_type);
    std::optional<oci::ImageConfig> config;
    if (image_config) {
      auto parsed = oci::ImageConfig::Parse(*config_bytes);
      if (!parsed.ok()) return parsed.status();
      config = std::move(*parsed);
      if (config->diff_ids().size() != manifest->layers.size()) {
        return absl::InvalidArgumentError(fmt::format(
            "config {} lists {} diff_ids for {} layers", manifest->config.digest.ToString(),
            config->diff_ids().size(), manifest->layers.size()));
      }
    }
    std::vector<Digest> diff_ids = config ? config->diff_ids() : std::vector<Digest>{};
    for (size_t i = 0; i < out.layers.size(); ++i) {
      oci::Descriptor& layer = out.layers[i];
      if (!oci::IsLayerType(layer.media_type) ||
          oci::LayerCompressionOf(layer.media_type) == oci::LayerCompression::kUnknown) {
        if (auto st = CopyBlob(layer); !st.ok()) return st;
        continue;
      }
      auto converted = ConvertLayer(layer);
      if (!converted.ok()) return converted.status();
      if (config && converted->source_diff_id != diff_ids[i]) {
        return absl::DataLossError(fmt::format(
            "layer {} uncompresses to {} but the config says diff_id {}", layer.digest.ToString(),
            converted->source_diff_id.ToString(), diff_ids[i].ToString()));
      }
      if (config) diff_ids[i] = converted->converted_diff_id;
      layer = converted->converted;
    }
    if (config) {
      config->set_diff_ids(diff_ids);
      std::string new_config = config->Serialize();
      // Keep the original bytes when nothing changed, so the config digest is stable.
      if (config->diff_ids() == oci::ImageConfig::Parse(*config_bytes)->diff_ids()) {
        new_config = *config_bytes;
      }
      out.config.digest = Digest::Of(new_config);
      out.config.size = new_config.size();
      if (manifest->config.media_type == oci::kDockerConfig) {
        out.config.media_type = std::string(oci::kOciConfig);
      }
      if (auto st = dst_.PutBlob(out.config, new_config); !st.ok()) return st;
    } else {
      if (auto st = dst_.PutBlob(out.config, *config_bytes); !st.ok()) return st;
    }
    std::string out_bytes = oci::SerializeManifest(out);
    oci::Descriptor desc;
    desc.media_type = out.media_type;
    desc.digest = Digest::Of(out_bytes);
    desc.size = out_bytes.size();
    return std::make_pair(desc, out_bytes);
  }

  absl::Status CopyBlob(const oci::Descriptor& d) {
    std::string scratch = scratch_ + "/copy-" + d.digest.hex();
    auto reader = src_.OpenBlob(d, scratch);
    if (!reader.ok()) return reader.status();
    auto data = (*reader)->ReadAt(0, (*reader)->Size());
    RemoveQuietly(scratch);
    if (!data.ok()) return data.status();
    return dst_.PutBlob(d, *data);
  }

  absl::StatusOr<ConvertedLayer> ConvertLayer(const oci::Descriptor& layer) {
    auto cached = layers_.find(layer.digest.hex());
    if (cached != layers_.end()) return cached->second;
    LogInfo("converting layer", {{"digest", layer.digest.ToString()}, {"size", layer.size}});
    std::string download = scratch_ + "/src-" + layer.digest.hex();
    std::string out_path = scratch_ + "/out-" + layer.digest.hex();
    auto reader = src_.OpenBlob(layer, download);
    if (!reader.ok()) return reader.status();
    auto converted = ConvertLayerFile(**reader, layer, options_, scratch_, out_path);
    reader->reset();
    RemoveQuietly(download);
    if (!converted.ok()) {
      RemoveQuietly(out_path);
      return converted.status();
    }
    absl::Status st = dst_.PutBlobFile(converted->converted, out_path);
    RemoveQuietly(out_path);
    if (!st.ok()) return st;
    layers_[layer.digest.hex()] = *converted;
    return *converted;
  }

  ImageStore& src_;
  ImageStore& dst_;
  const ConvertOptions& options_;
  std::string scratch_;
  std::map<std::string, ConvertedLayer> layers_;  // by source digest hex
};

}  // namespace

absl::StatusOr<LayerFormat> ParseLayerFormat(const std::string& text) {
  if (text == "estargz") return LayerFormat::kEstargz;
  if (text == "zstd:chunked" || text == "zstdchunked") return LayerFormat::kZstdChunked;
  return absl::InvalidArgumentError(
      fmt::format("unknown layer format \"{}\" (want estargz or zstd:chunked)", text));
}

absl::StatusOr<ConvertedLayer> ConvertLayerFile(BlobReader& layer, const oci::Descriptor& source,
                                                const ConvertOptions& options,
                                                const std::string& scratch_dir,
                                                const std::string& out_path) {
  ConvertedLayer result;
  result.source = source;
  auto compression = SniffCompression(layer);
  if (!compression.ok()) return compression.status();
  const std::string what = source.digest.empty() ? "layer" : source.digest.ToString();
  BlobReader* tar_reader = &layer;
  std::unique_ptr<BlobReader> decompressed;
  std::string tar_path;
  if (*compression == InputCompression::kNone) {
    // A plain tar is read in place; its DiffID is its digest.
    Sha256 sha;
    for (uint64_t pos = 0; pos < layer.Size();) {
      uint64_t n = std::min<uint64_t>(1 << 20, layer.Size() - pos);
      auto data = layer.ReadAt(pos, n);
      if (!data.ok()) return data.status();
      sha.Update(*data);
      pos += n;
    }
    result.source_diff_id = sha.Finish();
  } else {
    tar_path = scratch_dir + "/tar-" + std::to_string(getpid()) + "-" +
               (source.digest.empty() ? std::string("layer") : source.digest.hex());
    auto sink = NewFileBlobSink(tar_path);
    if (!sink.ok()) return sink.status();
    auto plain = DecompressLayer(layer, *compression, **sink, what);
    if (!plain.ok()) {
      RemoveQuietly(tar_path);
      return plain.status();
    }
    result.source_diff_id = plain->diff_id;
    auto reader = NewFileBlobReader(tar_path);
    if (!reader.ok()) return reader.status();
    decompressed = std::move(*reader);
    tar_reader = decompressed.get();
  }
  struct Cleanup {
    std::string path;
    ~Cleanup() {
      if (!path.empty()) RemoveQuietly(path);
    }
  } cleanup{tar_path};

  auto index = tar::ScanTar(*tar_reader);
  if (!index.ok()) {
    return absl::Status(index.status().code(),
                        fmt::format("layer {}: {}", what, std::string(index.status().message())));
  }
  auto sink = NewFileBlobSink(out_path);
  if (!sink.ok()) return sink.status();
  oci::Descriptor& d = result.converted;
  for (const auto& [k, v] : source.annotations) {
    if (!IsStaleFormatAnnotation(k)) d.annotations[k] = v;
  }
  // The format's global list, then what was recorded for this very layer.
  std::vector<std::string> prioritized = options.format == LayerFormat::kEstargz
                                             ? options.estargz.prioritized_files
                                             : options.zstd_chunked.prioritized_files;
  if (auto it = options.prioritized_by_layer.find(source.digest.ToString());
      !source.digest.empty() && it != options.prioritized_by_layer.end()) {
    prioritized.insert(prioritized.end(), it->second.begin(), it->second.end());
  }
  if (options.format == LayerFormat::kEstargz) {
    EstargzOptions estargz = options.estargz;
    estargz.prioritized_files = std::move(prioritized);
    auto w = WriteEstargz(*tar_reader, *index, estargz, **sink);
    if (!w.ok()) return w.status();
    d.media_type = std::string(oci::kOciLayerGzip);
    d.digest = w->blob_digest;
    d.size = w->blob_size;
    d.annotations[kEstargzTocDigestAnnotation] = w->toc_digest.ToString();
    d.annotations[kEstargzUncompressedSizeAnnotation] = std::to_string(w->uncompressed_size);
    result.converted_diff_id = w->diff_id;
    result.missing_prioritized_files = std::move(w->missing_prioritized_files);
  } else {
    ZstdChunkedOptions zstd = options.zstd_chunked;
    zstd.prioritized_files = std::move(prioritized);
    auto w = WriteZstdChunked(*tar_reader, *index, zstd, **sink);
    if (!w.ok()) return w.status();
    d.media_type = std::string(oci::kOciLayerZstd);
    d.digest = w->blob_digest;
    d.size = w->blob_size;
    for (const auto& [k, v] : w->Annotations()) d.annotations[k] = v;
    result.converted_diff_id = w->diff_id;
    result.missing_prioritized_files = std::move(w->missing_prioritized_files);
    // Only moving prioritized entries first may change the tar.
    if (!w->reordered && w->diff_id != result.source_diff_id) {
      return absl::InternalError(
          fmt::format("zstd:chunked conversion of {} changed the DiffID ({} -> {})", what,
                      result.source_diff_id.ToString(), w->diff_id.ToString()));
    }
  }
  return result;
}

absl::StatusOr<ConvertResult> ConvertImage(ImageStore& src, ImageStore& dst,
                                           const ConvertOptions& options) {
  auto scratch = ScratchDir::Create(options.work_dir);
  if (!scratch.ok()) return scratch.status();
  Converter c(src, dst, options, scratch->path());
  return c.Run();
}

}  // namespace lazypull::convert
