// RemoteLayerHandler: the seam through which lazily-pulled ("remote") layers enter the
// snapshotter. The Snapshotter consults it in Prepare when the request's labels carry
// `containerd.io/snapshot.ref` (the chain id containerd wants to end up with):
//
//   1. Snapshotter creates the active snapshot `key` as usual (dir <root>/snapshots/<id>).
//   2. It calls PrepareRemoteLayer(request, fs_dir). The handler mounts the layer read-only at
//      `fs_dir` (FUSE or EROFS, chosen by [mount] backend) and returns extra labels.
//   3. OK → the Snapshotter commits `key` under `request.target_name` with the request labels,
//      the returned labels and `containerd.io/snapshot/remote=true`, then answers
//      ALREADY_EXISTS (containerd's remote-snapshot protocol). Any error → the handler must
//      leave nothing mounted; the Snapshotter logs it and returns the normal active snapshot's
//      mounts, so containerd unpacks the layer itself.
//
// Implementations must be thread-safe: RPCs run concurrently. They must never throw.
#ifndef LAZYPULL_SERVER_REMOTE_LAYER_HANDLER_H_
#define LAZYPULL_SERVER_REMOTE_LAYER_HANDLER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/snapshot_info.h"

namespace lazypull {

inline constexpr char kTargetSnapshotRefLabel[] = "containerd.io/snapshot.ref";
inline constexpr char kRemoteSnapshotLabel[] = "containerd.io/snapshot/remote";

struct RemoteLayerRequest {
  std::string key;          // the active key containerd prepared
  std::string parent;       // committed parent name ("" for the base layer)
  std::string target_name;  // value of containerd.io/snapshot.ref
  Labels labels;            // all request labels (CRI / stargz annotations live here)
  int64_t snapshot_id = 0;  // id of the new snapshot
  // Ids of the committed parent chain, nearest first (the layers below this one).
  std::vector<int64_t> parent_ids;
};

class RemoteLayerHandler {
 public:
  virtual ~RemoteLayerHandler() = default;

  // Mounts the layer described by `request` at `fs_dir` (an empty directory owned by the
  // snapshotter). Returns labels to add to the committed snapshot. Any error means "not
  // remote": nothing may stay mounted at `fs_dir`.
  virtual absl::StatusOr<Labels> PrepareRemoteLayer(const RemoteLayerRequest& request,
                                                    const std::string& fs_dir) = 0;

  // Called at daemon start for every snapshot carrying kRemoteSnapshotLabel, so the handler
  // can re-mount it at `fs_dir`. `parent_ids` as in RemoteLayerRequest. An error is logged;
  // the snapshot stays in metadata.
  virtual absl::Status RestoreRemoteLayer(int64_t snapshot_id, const SnapshotInfo& info,
                                          const std::vector<int64_t>& parent_ids,
                                          const std::string& fs_dir) = 0;

  // Called once by the daemon after every RestoreRemoteLayer call and before serving gRPC, so a
  // handler may queue restores and run them in parallel here. An error fails daemon start.
  virtual absl::Status FinishRestore() { return absl::OkStatus(); }

  // Whether the layer of snapshot `snapshot_id` can be used as a lowerdir. Unavailable when it
  // is a remote layer that could not be re-mounted; OK for every other id.
  virtual absl::Status CheckLayerAvailable(int64_t snapshot_id) { return absl::OkStatus(); }

  // Called after Prepare created an active snapshot that is not a layer (no
  // containerd.io/snapshot.ref label: a container's rootfs) on the committed chain
  // `parent_ids` (nearest first): a container is about to start on those layers. Must return
  // at once. Default: nothing.
  virtual void ContainerPrepared(const std::vector<int64_t>& parent_ids) {}

  // Called after snapshot `snapshot_id` left the metadata and before its directory is
  // deleted (Remove, Cleanup): unmount `fs_dir` and drop caches. Must be idempotent and
  // succeed when nothing is mounted.
  virtual absl::Status ReleaseRemoteLayer(int64_t snapshot_id, const std::string& fs_dir) = 0;
};

// The default: never remote. PrepareRemoteLayer returns Unimplemented; the others are no-ops.
class NoRemoteLayers final : public RemoteLayerHandler {
 public:
  absl::StatusOr<Labels> PrepareRemoteLayer(const RemoteLayerRequest& request,
                                            const std::string& fs_dir) override {
    return absl::UnimplementedError("remote snapshots are not enabled");
  }
  absl::Status RestoreRemoteLayer(int64_t, const SnapshotInfo&, const std::vector<int64_t>&,
                                  const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status ReleaseRemoteLayer(int64_t, const std::string&) override { return absl::OkStatus(); }
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_REMOTE_LAYER_HANDLER_H_
