// Value types describing a snapshot, shared by the metadata store, the snapshotter and the
// gRPC service. Mirrors containerd's snapshots.Info / snapshots.Usage.
#ifndef LAZYPULL_SERVER_SNAPSHOT_INFO_H_
#define LAZYPULL_SERVER_SNAPSHOT_INFO_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace lazypull {

// Numeric values match containerd.services.snapshots.v1.Kind.
enum class SnapshotKind : int { kUnknown = 0, kView = 1, kActive = 2, kCommitted = 3 };

// "view", "active", "committed" (as containerd's filters spell them), "unknown".
absl::string_view SnapshotKindName(SnapshotKind kind);

using Labels = std::map<std::string, std::string>;

struct SnapshotInfo {
  std::string name;    // key (active/view) or committed name
  std::string parent;  // committed parent name, "" for none
  SnapshotKind kind = SnapshotKind::kUnknown;
  absl::Time created_at = absl::UnixEpoch();
  absl::Time updated_at = absl::UnixEpoch();
  Labels labels;
};

struct SnapshotUsage {
  int64_t size = 0;    // bytes (st_blocks * 512 of unique inodes)
  int64_t inodes = 0;  // unique inodes
};

// containerd caps a label's key+value at 4096 bytes.
inline constexpr size_t kMaxLabelSize = 4096;

// InvalidArgument naming the label (first bytes of its key) if any label is too large.
absl::Status ValidateLabels(const Labels& labels);

// Drops labels with an empty value: containerd never stores them.
void DropEmptyLabels(Labels& labels);

}  // namespace lazypull

#endif  // LAZYPULL_SERVER_SNAPSHOT_INFO_H_
