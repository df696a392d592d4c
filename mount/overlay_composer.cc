#include "mount/overlay_composer.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace lazypull {

std::string SnapshotDir(absl::string_view snapshots_dir, int64_t id) {
  return absl::StrCat(snapshots_dir, "/", id);
}
std::string SnapshotFsDir(absl::string_view snapshots_dir, int64_t id) {
  return absl::StrCat(snapshots_dir, "/", id, "/fs");
}
std::string SnapshotWorkDir(absl::string_view snapshots_dir, int64_t id) {
  return absl::StrCat(snapshots_dir, "/", id, "/work");
}

std::vector<MountSpec> ComposeSnapshotMounts(absl::string_view snapshots_dir, int64_t id,
                                             SnapshotMountMode mode,
                                             std::span<const int64_t> parent_ids,
                                             bool overlay_index_off) {
  if (parent_ids.empty()) {
    return {MountSpec{.type = "bind",
                      .source = SnapshotFsDir(snapshots_dir, id),
                      .options = {mode == SnapshotMountMode::kView ? "ro" : "rw", "rbind"}}};
  }
  std::vector<std::string> options;
  if (overlay_index_off) options.push_back("index=off");
  if (mode == SnapshotMountMode::kActive) {
    options.push_back(absl::StrCat("workdir=", SnapshotWorkDir(snapshots_dir, id)));
    options.push_back(absl::StrCat("upperdir=", SnapshotFsDir(snapshots_dir, id)));
  } else if (parent_ids.size() == 1) {
    return {MountSpec{.type = "bind",
                      .source = SnapshotFsDir(snapshots_dir, parent_ids[0]),
                      .options = {"ro", "rbind"}}};
  }
  std::vector<std::string> lowers;
  lowers.reserve(parent_ids.size());
  for (int64_t parent : parent_ids) lowers.push_back(SnapshotFsDir(snapshots_dir, parent));
  options.push_back(absl::StrCat("lowerdir=", absl::StrJoin(lowers, ":")));
  return {MountSpec{.type = "overlay", .source = "overlay", .options = std::move(options)}};
}

bool KernelOverlaySupportsIndex() {
  struct stat st;
  return ::stat("/sys/module/overlay/parameters/index", &st) == 0;
}

std::string CompactLowerdirOption(std::vector<std::string>& options) {
  constexpr absl::string_view kPrefix = "lowerdir=";
  size_t idx = options.size();
  for (size_t i = 0; i < options.size(); ++i) {
    if (absl::StartsWith(options[i], kPrefix)) {
      idx = i;
      break;
    }
  }
  if (idx == options.size()) return "";
  std::vector<std::string> dirs =
      absl::StrSplit(absl::string_view(options[idx]).substr(kPrefix.size()), ':');
  if (dirs.size() <= 1) return "";
  std::string common = dirs[0];
  for (const std::string& d : dirs) {
    size_t n = 0;
    while (n < common.size() && n < d.size() && common[n] == d[n]) ++n;
    common.resize(n);
  }
  // Like containerd: step back to the directory holding the numeric snapshot ids.
  size_t slash = common.rfind('/');
  if (slash == std::string::npos || slash == 0) return "";
  common.resize(slash);
  std::string prefix = common + "/";
  std::vector<std::string> relative;
  relative.reserve(dirs.size());
  for (const std::string& d : dirs) relative.push_back(d.substr(prefix.size()));
  options.erase(options.begin() + static_cast<ptrdiff_t>(idx));
  options.push_back(absl::StrCat(kPrefix, absl::StrJoin(relative, ":")));
  return prefix;
}

}  // namespace lazypull
