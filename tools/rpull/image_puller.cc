#include "tools/rpull/image_puller.h"

#include <chrono>
#include <utility>

#include "base/logging.h"
#include "fetcher/oci/image_config.h"
#include "fetcher/oci/index.h"
#include "fetcher/oci/manifest.h"
#include "fetcher/oci/media_types.h"
#include "fmt/format.h"

namespace lazypull::rpull {
namespace {

// Label keys containerd itself uses (images.ChildGCLabels, the unpacker, CRI's
// AppendInfoHandlerWrapper); remote snapshotters and containerd's GC read them.
constexpr char kSnapshotRefLabel[] = "containerd.io/snapshot.ref";
constexpr char kCriImageRefLabel[] = "containerd.io/snapshot/cri.image-ref";
// Set by lazypull on the layers it mounted lazily: "estargz", "zstd:chunked", "soci".
constexpr char kLazyFormatLabel[] = "containerd.io/snapshot/lazypull.format";
constexpr char kCriManifestDigestLabel[] = "containerd.io/snapshot/cri.manifest-digest";
constexpr char kCriLayerDigestLabel[] = "containerd.io/snapshot/cri.layer-digest";
constexpr char kCriImageLayersLabel[] = "containerd.io/snapshot/cri.image-layers";
constexpr char kSnapshotLabelPrefix[] = "containerd.io/snapshot/";
constexpr char kUncompressedLabel[] = "containerd.io/uncompressed";
constexpr size_t kMaxLabelBytes = 4096;  // containerd's labels.Validate: len(key)+len(value)

// A pull that dies mid-way must not pin content forever; a day is what containerd's client
// uses too.
constexpr std::chrono::hours kLeaseExpiry{24};

absl::Status Annotate(const absl::Status& st, std::string_view context) {
  if (st.ok()) return st;
  return absl::Status(st.code(), fmt::format("{}: {}", context, std::string(st.message())));
}

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// containerd.io/distribution.source.<host>=<repository>: lets containerd (and a later push)
// know where the blob came from, as containerd's client records it.
Labels SourceLabels(const registry::Reference& ref) {
  return {{"containerd.io/distribution.source." + ref.host, ref.repository}};
}

class Puller {
 public:
  Puller(ContainerdApi& containerd, registry::RegistryClient& registry, registry::Reference ref,
         const PullOptions& options, PullObserver* observer)
      : containerd_(containerd),
        registry_(registry),
        ref_(std::move(ref)),
        options_(options),
        observer_(observer) {}

  absl::StatusOr<PullResult> Run() {
    PullResult result;
    result.image_name = ref_.ToString();

    // --- Resolve: root document, the platform's manifest, the config. ---
    auto root = registry_.FetchManifest(ref_);
    if (!root.ok()) return Annotate(root.status(), "resolving " + ref_.ToString());
    result.root = root->descriptor;
    std::optional<registry::FetchedManifest> index_doc;
    registry::FetchedManifest manifest_doc;
    if (oci::IsIndexType(root->descriptor.media_type)) {
      auto index = oci::ParseIndex(root->bytes, root->descriptor.media_type);
      if (!index.ok()) return Annotate(index.status(), "index of " + ref_.ToString());
      const oci::Platform want = options_.platform.value_or(oci::HostPlatform());
      auto chosen = oci::SelectPlatformManifest(*index, want);
      if (!chosen.ok()) return Annotate(chosen.status(), ref_.ToString());
      registry::Reference by_digest = ref_;
      by_digest.digest = chosen->digest;
      auto m = registry_.FetchManifest(by_digest);
      if (!m.ok()) return Annotate(m.status(), "manifest of " + ref_.ToString());
      index_doc = std::move(*root);
      manifest_doc = std::move(*m);
    } else {
      manifest_doc = std::move(*root);
    }
    auto manifest = oci::ParseManifest(manifest_doc.bytes, manifest_doc.descriptor.media_type);
    if (!manifest.ok()) {
      return Annotate(manifest.status(),
                      fmt::format("manifest {} of {}", manifest_doc.descriptor.digest.ToString(),
                                  ref_.ToString()));
    }
    result.manifest_digest = manifest_doc.descriptor.digest;
    auto config_bytes = registry_.FetchBlob(ref_, manifest->config);
    if (!config_bytes.ok()) {
      return Annotate(
          config_bytes.status(),
          fmt::format("config {} of {}", manifest->config.digest.ToString(), ref_.ToString()));
    }
    auto config = oci::ImageConfig::Parse(*config_bytes);
    if (!config.ok()) {
      return Annotate(
          config.status(),
          fmt::format("config {} of {}", manifest->config.digest.ToString(), ref_.ToString()));
    }
    if (config->diff_ids().size() != manifest->layers.size()) {
      return absl::InvalidArgumentError(
          fmt::format("image {}: the manifest has {} layers but the config lists {} diff_ids",
                      ref_.ToString(), manifest->layers.size(), config->diff_ids().size()));
    }
    if (observer_) {
      observer_->OnResolved(result.image_name, manifest_doc.descriptor, manifest->layers.size());
    }

    // --- Everything below is written under a lease. ---
    auto lease = containerd_.CreateLease(kLeaseExpiry);
    if (!lease.ok()) return lease.status();
    containerd_.SetLease(*lease);
    absl::StatusOr<PullResult> out = WriteAndUnpack(std::move(result), index_doc, manifest_doc,
                                                    *manifest, *config_bytes, config->diff_ids());
    containerd_.SetLease("");
    if (absl::Status st = containerd_.DeleteLease(*lease); !st.ok()) {
      // The lease expires on its own; the pull's outcome stands.
      LogWarn("rpull: could not delete lease", {{"lease", *lease}, {"error", st.ToString()}});
    }
    return out;
  }

 private:
  absl::StatusOr<PullResult> WriteAndUnpack(PullResult result,
                                            const std::optional<registry::FetchedManifest>& index,
                                            const registry::FetchedManifest& manifest_doc,
                                            const oci::Manifest& manifest,
                                            const std::string& config_bytes,
                                            const std::vector<Digest>& diff_ids) {
    // Config first, then the manifest and index that reference it (children before parents, so
    // a GC reference never points at content that will not arrive).
    Labels source = SourceLabels(ref_);
    if (auto st = WriteSmall(manifest.config, config_bytes, source); !st.ok()) return st;
    Labels manifest_labels = source;
    manifest_labels["containerd.io/gc.ref.content.config"] = manifest.config.digest.ToString();
    for (size_t i = 0; i < manifest.layers.size(); ++i) {
      manifest_labels[fmt::format("containerd.io/gc.ref.content.l.{}", i)] =
          manifest.layers[i].digest.ToString();
    }
    if (auto st = WriteSmall(manifest_doc.descriptor, manifest_doc.bytes, manifest_labels);
        !st.ok()) {
      return st;
    }
    if (index) {
      Labels index_labels = source;
      index_labels["containerd.io/gc.ref.content.m.0"] = manifest_doc.descriptor.digest.ToString();
      if (auto st = WriteSmall(index->descriptor, index->bytes, index_labels); !st.ok()) return st;
    }

    // Unpack bottom up.
    const std::vector<Digest> chain = ChainIds(diff_ids);
    for (size_t i = 0; i < manifest.layers.size(); ++i) {
      auto report = UnpackLayer(i, manifest, manifest_doc.descriptor.digest, diff_ids[i],
                                chain[i].ToString(), i == 0 ? "" : chain[i - 1].ToString());
      if (!report.ok()) return report.status();
      if (observer_) observer_->OnLayerDone(i, *report);
      result.layers.push_back(std::move(*report));
    }

    // The snapshots stay alive as long as the config does, and the config as long as the image.
    if (!chain.empty()) {
      Labels gc{{"containerd.io/gc.ref.snapshot." + options_.snapshotter, chain.back().ToString()}};
      if (auto st = containerd_.SetContentLabels(manifest.config.digest, gc); !st.ok()) return st;
    }
    ImageRecord record;
    record.name = result.image_name;
    record.target = result.root;
    if (auto st = containerd_.PutImage(record); !st.ok()) return st;
    return result;
  }

  absl::Status WriteSmall(const oci::Descriptor& desc, const std::string& bytes,
                          const Labels& labels) {
    return containerd_.WriteContent(WriteRef(desc), desc, labels,
                                    [&](const ChunkWriter& write) { return write(0, bytes); });
  }

  static std::string WriteRef(const oci::Descriptor& desc) {
    // containerd's client names ingests by kind and digest; one per blob, so two concurrent
    // pulls of the same blob wait on containerd's ingest lock instead of corrupting each other.
    return "lazypull-rpull-" + desc.digest.ToString();
  }

  absl::StatusOr<LayerReport> UnpackLayer(size_t i, const oci::Manifest& manifest,
                                          const Digest& manifest_digest, const Digest& diff_id,
                                          const std::string& chain_id, const std::string& parent) {
    const oci::Descriptor& layer = manifest.layers[i];
    const auto t0 = std::chrono::steady_clock::now();
    LayerReport report;
    report.layer = layer;
    report.chain_id = chain_id;
    const std::string where = fmt::format("layer {} ({})", i + 1, layer.digest.ToString());
    if (observer_) observer_->OnLayerStart(i, layer);

    absl::Status existing = containerd_.Stat(options_.snapshotter, chain_id).status();
    if (existing.ok()) {
      report.outcome = LayerOutcome::kAlreadyThere;
      report.seconds = SecondsSince(t0);
      return report;
    }
    if (!absl::IsNotFound(existing)) return Annotate(existing, where);

    Labels labels;
    for (const auto& [k, v] : layer.annotations) {
      if (k.rfind(kSnapshotLabelPrefix, 0) == 0) labels[k] = v;
    }
    labels[kSnapshotRefLabel] = chain_id;
    labels[kCriImageRefLabel] = ref_.ToString();
    labels[kCriManifestDigestLabel] = manifest_digest.ToString();
    labels[kCriLayerDigestLabel] = layer.digest.ToString();
    labels[kCriImageLayersLabel] = ImageLayersLabel(std::vector<oci::Descriptor>(
        manifest.layers.begin() + static_cast<ptrdiff_t>(i), manifest.layers.end()));
    const std::string key = fmt::format(
        "extract-{}-{}", std::chrono::system_clock::now().time_since_epoch().count(), chain_id);
    auto mounts = containerd_.Prepare(options_.snapshotter, key, parent, labels);
    if (absl::IsAlreadyExists(mounts.status())) {
      // The remote snapshotter made the layer from the labels; containerd has recorded it under
      // the chain ID. Make sure before calling it done.
      absl::StatusOr<Labels> made = containerd_.Stat(options_.snapshotter, chain_id);
      if (!made.ok()) {
        return Annotate(made.status(), where + ": the snapshotter said it exists, but");
      }
      if (auto f = made->find(kLazyFormatLabel); f != made->end()) report.format = f->second;
      report.outcome = LayerOutcome::kLazy;
      report.seconds = SecondsSince(t0);
      return report;
    }
    if (!mounts.ok()) return Annotate(mounts.status(), where);

    // Not lazy: download, apply, commit; on failure remove the active snapshot.
    absl::Status st = DownloadApplyCommit(i, layer, diff_id, chain_id, key, *mounts, report);
    if (!st.ok()) {
      if (absl::Status rm = containerd_.Remove(options_.snapshotter, key);
          !rm.ok() && !absl::IsNotFound(rm)) {
        LogWarn("rpull: could not remove active snapshot",
                {{"key", key}, {"error", rm.ToString()}});
      }
      return Annotate(st, where);
    }
    report.outcome = LayerOutcome::kDownloaded;
    report.seconds = SecondsSince(t0);
    return report;
  }

  absl::Status DownloadApplyCommit(size_t i, const oci::Descriptor& layer, const Digest& diff_id,
                                   const std::string& chain_id, const std::string& key,
                                   const std::vector<Mount>& mounts, LayerReport& report) {
    Labels blob_labels = SourceLabels(ref_);
    blob_labels[kUncompressedLabel] = diff_id.ToString();
    if (containerd_.ContentLabels(layer.digest).ok()) {
      if (auto st = containerd_.SetContentLabels(layer.digest, blob_labels); !st.ok()) return st;
    } else {
      const uint64_t total = static_cast<uint64_t>(layer.size);
      absl::Status st = containerd_.WriteContent(
          WriteRef(layer), layer, blob_labels, [&](const ChunkWriter& write) {
            return registry_.FetchBlobStream(
                ref_, layer, [&](uint64_t offset, std::string_view bytes) -> absl::Status {
                  if (auto w = write(offset, bytes); !w.ok()) return w;
                  report.bytes_downloaded = offset + bytes.size();
                  if (observer_) observer_->OnLayerBytes(i, report.bytes_downloaded, total);
                  return absl::OkStatus();
                });
          });
      if (!st.ok()) return Annotate(st, "downloading");
    }
    auto applied = containerd_.Apply(layer, mounts);
    if (!applied.ok()) return applied.status();
    if (*applied != diff_id) {
      return absl::DataLossError(
          fmt::format("unpacked content has digest {} but the image config's diff_id is {}",
                      applied->ToString(), diff_id.ToString()));
    }
    absl::Status commit =
        containerd_.Commit(options_.snapshotter, chain_id, key, {{kSnapshotRefLabel, chain_id}});
    // Another pull committed the same chain ID meanwhile: the layer is there either way.
    if (absl::IsAlreadyExists(commit)) {
      return containerd_.Remove(options_.snapshotter, key);
    }
    return commit;
  }

  ContainerdApi& containerd_;
  registry::RegistryClient& registry_;
  registry::Reference ref_;
  const PullOptions& options_;
  PullObserver* observer_;
};

}  // namespace

const char* LayerOutcomeName(LayerOutcome outcome) {
  switch (outcome) {
    case LayerOutcome::kLazy:
      return "lazy";
    case LayerOutcome::kDownloaded:
      return "downloaded";
    case LayerOutcome::kAlreadyThere:
      return "already unpacked";
  }
  return "?";
}

std::vector<Digest> ChainIds(const std::vector<Digest>& diff_ids) {
  std::vector<Digest> out;
  out.reserve(diff_ids.size());
  for (const Digest& d : diff_ids) {
    if (out.empty()) {
      out.push_back(d);
    } else {
      out.push_back(Digest::Of(out.back().ToString() + " " + d.ToString()));
    }
  }
  return out;
}

std::string ImageLayersLabel(const std::vector<oci::Descriptor>& layers) {
  std::string value;
  const size_t key_len = std::string_view(kCriImageLayersLabel).size();
  for (const oci::Descriptor& l : layers) {
    std::string item = (value.empty() ? "" : ",") + l.digest.ToString();
    if (key_len + value.size() + item.size() > kMaxLabelBytes) break;
    value += item;
  }
  return value;
}

absl::StatusOr<PullResult> PullImage(ContainerdApi& containerd, registry::RegistryClient& registry,
                                     const registry::Reference& ref, const PullOptions& options,
                                     PullObserver* observer) {
  return Puller(containerd, registry, ref, options, observer).Run();
}

}  // namespace lazypull::rpull
