// Snapshotter: containerd's snapshot lifecycle (the overlayfs snapshotter's semantics) over a
// MetaStore and per-snapshot directories <root>/snapshots/<id>/{fs,work}.
//
// Directories are named by numeric id only, never by key, so keys are opaque. New directories
// are built under <root>/snapshots/new-XXXXXX and renamed into place before the metadata
// transaction commits; removed directories are deleted after it commits. A crash at any point
// leaves either the old or the new state plus, at worst, directories no snapshot refers to,
// which Cleanup removes.
//
// Thread-safety: all methods are thread-safe (metadata transactions are serialized).
// Errors use containerd's codes: NotFound, AlreadyExists, FailedPrecondition, InvalidArgument;
// Internal/errno codes for I/O failures, with the key and path in the message.
#ifndef LAZYPULL_SERVER_SNAPSHOTTER_H_
#define LAZYPULL_SERVER_SNAPSHOTTER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mount/overlay_composer.h"
#include "server/filters.h"
#include "server/metastore.h"
#include "server/remote_layer_handler.h"
#include "server/snapshot_info.h"

namespace lazypull {

class Snapshotter {
 public:
  struct Options {
    std::string root;  // holds metadata.db and snapshots/
    // Adds "index=off" to overlay mounts; default: as the kernel supports it.
    bool overlay_index_off = KernelOverlaySupportsIndex();
    // Consulted in Prepare for containerd.io/snapshot.ref; not owned, must outlive the
    // Snapshotter. nullptr: no remote snapshots.
    RemoteLayerHandler* remote = nullptr;
  };

  // Creates <root> and <root>/snapshots and makes both 0700 (also when they existed), makes
  // <root>/metadata.db 0600, opens it, and re-mounts remote layers through options.remote.
  static absl::StatusOr<std::unique_ptr<Snapshotter>> Open(Options options);

  // Creates an active (Prepare) or view (View) snapshot and returns its mounts.
  // InvalidArgument: empty key, oversized label, parent not committed. NotFound: parent.
  // AlreadyExists: key taken — or the remote layer was committed as the label
  // containerd.io/snapshot.ref asked.
  absl::StatusOr<std::vector<MountSpec>> Prepare(const std::string& key, const std::string& parent,
                                                 Labels labels);
  absl::StatusOr<std::vector<MountSpec>> View(const std::string& key, const std::string& parent,
                                              Labels labels);

  // Mounts of an active or view snapshot. NotFound; FailedPrecondition for committed ones.
  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& key);

  // Commits active `key` as `name` with `labels` (replacing the old ones), storing its usage.
  absl::Status Commit(const std::string& name, const std::string& key, Labels labels);

  // Removes `key` and its directory. FailedPrecondition if it has children.
  absl::Status Remove(const std::string& key);

  absl::StatusOr<SnapshotInfo> Stat(const std::string& key);

  // See MetaStore::Transaction::UpdateInfo for `paths`.
  absl::StatusOr<SnapshotInfo> Update(const SnapshotInfo& info,
                                      const std::vector<std::string>& paths);

  // Every snapshot matching `filter`, ordered by id. Snapshot of the metadata at call time.
  absl::StatusOr<std::vector<SnapshotInfo>> List(const SnapshotFilter& filter);

  // Active: measured now over the fs dir; committed: stored at commit; view: zero.
  absl::StatusOr<SnapshotUsage> Usage(const std::string& key);

  // Removes every directory under <root>/snapshots not referenced by metadata (including
  // leftover new-* temp dirs). Returns the number removed.
  absl::StatusOr<int> Cleanup();

  const std::string& root() const { return options_.root; }
  std::string snapshots_dir() const { return options_.root + "/snapshots"; }

 private:
  explicit Snapshotter(Options options, std::unique_ptr<MetaStore> store)
      : options_(std::move(options)), store_(std::move(store)) {}
  absl::StatusOr<std::vector<MountSpec>> CreateSnapshot(SnapshotKind kind, const std::string& key,
                                                        const std::string& parent, Labels labels);
  absl::StatusOr<std::vector<MountSpec>> MaybePrepareRemote(const std::string& key,
                                                            const std::string& parent,
                                                            const Labels& labels);
  std::vector<MountSpec> MountsOf(const SnapshotRecord& record) const;

  Options options_;
  std::unique_ptr<MetaStore> store_;
};

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_SNAPSHOTTER_H_
