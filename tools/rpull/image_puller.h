// PullImage: what `lazypull rpull` does — pull an image into containerd the way containerd's
// own client does with unpacking (client.Pull + WithPullUnpack), but with the remote-snapshot
// labels (CRI's set) on every layer's Prepare, so a remote snapshotter can mount lazily:
//
//   1. a lease (expiring on its own) keeps everything written below from GC until the image
//      record references it;
//   2. the reference is resolved with lazypull's registry client (same hosts.toml, auth and
//      docker config as the daemon); the index (if any), the platform's manifest and the config
//      are written to containerd's content store, verified, with containerd's GC labels
//      (containerd.io/gc.ref.content.{m.<i>,config,l.<i>}) and distribution-source labels;
//   3. per layer, bottom up: Stat(chainID) (already unpacked: done); else Prepare with key
//      `extract-<nanos>-<chainID>`, parent = the previous chain ID and labels
//      containerd.io/snapshot.ref=<chainID> + containerd.io/snapshot/cri.{image-ref,
//      manifest-digest,layer-digest,image-layers} + the layer's containerd.io/snapshot/*
//      annotations. ALREADY_EXISTS means the snapshotter made the layer itself (lazy). Any
//      other success means it wants the content: the blob is streamed from the registry into
//      the content store, applied with containerd's Diff service, its DiffID checked against
//      the config, and the snapshot committed as the chain ID;
//   4. the config gets containerd.io/gc.ref.snapshot.<snapshotter>=<top chain ID>, then the
//      image record (name = the canonical reference, target = the root descriptor) is created
//      or updated — last, so a failed pull leaves no image record.
#ifndef LAZYPULL_TOOLS_RPULL_IMAGE_PULLER_H_
#define LAZYPULL_TOOLS_RPULL_IMAGE_PULLER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/oci/descriptor.h"
#include "fetcher/oci/platform.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "lazypull/digest.h"
#include "tools/rpull/containerd_api.h"

namespace lazypull::rpull {

struct PullOptions {
  std::string snapshotter = "lazypull";
  std::optional<oci::Platform> platform;  // nullopt: this host's platform
};

// What became of one layer.
enum class LayerOutcome {
  kLazy,         // the snapshotter mounted it from the registry (Prepare said ALREADY_EXISTS)
  kDownloaded,   // fetched in full, applied by containerd, committed
  kAlreadyThere  // its chain ID was unpacked before (nothing sent)
};
const char* LayerOutcomeName(LayerOutcome outcome);

struct LayerReport {
  oci::Descriptor layer;
  std::string chain_id;  // "sha256:<hex>"
  LayerOutcome outcome = LayerOutcome::kLazy;
  std::string format;  // kLazy: the lazy format the snapshotter named ("" if it named none)
  uint64_t bytes_downloaded = 0;
  double seconds = 0;
};

struct PullResult {
  std::string image_name;           // the image record's name
  oci::Descriptor root;             // what the record points at (index or manifest)
  Digest manifest_digest;           // the platform's manifest
  std::vector<LayerReport> layers;  // base layer first
};

// Told what happens, in order, from the pulling thread. Implementations print progress.
class PullObserver {
 public:
  virtual ~PullObserver() = default;
  virtual void OnResolved(const std::string& image_name, const oci::Descriptor& manifest,
                          size_t layer_count) = 0;
  // Layer `index` (base = 0) is being unpacked.
  virtual void OnLayerStart(size_t index, const oci::Descriptor& layer) = 0;
  // Bytes of layer `index` downloaded so far (only for layers that are downloaded).
  virtual void OnLayerBytes(size_t index, uint64_t bytes, uint64_t total) = 0;
  virtual void OnLayerDone(size_t index, const LayerReport& report) = 0;
};

// Pulls `ref` into containerd through `containerd` (connected, in its namespace), reading the
// registry with `registry`. `observer` may be null. Errors carry the step that failed and the
// layer digest where one is involved; the lease is deleted on every path, so nothing the
// failed pull wrote outlives containerd's next GC. Not thread-safe with respect to
// `containerd`; `registry` may be shared.
absl::StatusOr<PullResult> PullImage(ContainerdApi& containerd, registry::RegistryClient& registry,
                                     const registry::Reference& ref, const PullOptions& options,
                                     PullObserver* observer);

// The OCI chain IDs of a layer stack: chain[0] = diff_ids[0], chain[i] = sha256(chain[i-1] +
// " " + diff_ids[i]) over the "sha256:<hex>" strings.
std::vector<Digest> ChainIds(const std::vector<Digest>& diff_ids);

// containerd.io/snapshot/cri.image-layers for `layers`: their digests joined by ',' while key
// and value together stay within containerd's 4096-byte label limit (the rest is left out, as
// containerd's CRI does).
std::string ImageLayersLabel(const std::vector<oci::Descriptor>& layers);

}  // namespace lazypull::rpull

#endif  // LAZYPULL_TOOLS_RPULL_IMAGE_PULLER_H_
