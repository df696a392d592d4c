#include "server/snapshot_info.h"

#include "absl/strings/str_cat.h"

namespace lazypull {

absl::string_view SnapshotKindName(SnapshotKind kind) {
  switch (kind) {
    case SnapshotKind::kView:
      return "view";
    case SnapshotKind::kActive:
      return "active";
    case SnapshotKind::kCommitted:
      return "committed";
    default:
      return "unknown";
  }
}

absl::Status ValidateLabels(const Labels& labels) {
  for (const auto& [key, value] : labels) {
    if (key.size() + value.size() > kMaxLabelSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("label key and value greater than maximum size (", kMaxLabelSize,
                       " bytes), key: ", key.substr(0, 10)));
    }
  }
  return absl::OkStatus();
}

void DropEmptyLabels(Labels& labels) {
  std::erase_if(labels, [](const auto& kv) { return kv.second.empty(); });
}

}  // namespace lazypull
