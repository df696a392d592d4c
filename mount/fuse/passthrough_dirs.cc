#include "mount/fuse/passthrough_dirs.h"

#include <cstdint>
#include <filesystem>
#include <system_error>

#include "base/logging.h"
#include "fmt/format.h"

namespace lazypull::mount {

namespace fs = std::filesystem;

std::string PassthroughStateDir(const std::string& root, const std::string& target) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: stable across processes
  for (unsigned char c : target) h = (h ^ c) * 1099511628211ull;
  return fmt::format("{}/{:016x}", root, h);
}

size_t SweepPassthroughDirs(const std::string& root, const std::set<std::string>& live_targets) {
  std::set<std::string> keep;
  for (const std::string& t : live_targets) keep.insert(PassthroughStateDir(root, t));
  std::error_code ec;
  size_t removed = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    if (keep.count(e.path().string()) > 0) continue;
    std::error_code rec;
    fs::remove_all(e.path(), rec);
    if (rec) {
      LogWarn("cannot remove a stale FUSE passthrough state dir",
              {{"path", e.path().string()}, {"error", rec.message()}});
    } else {
      ++removed;
    }
  }
  if (removed > 0) {
    LogInfo("removed stale FUSE passthrough state", {{"root", root}, {"dirs", removed}});
  }
  return removed;
}

}  // namespace lazypull::mount
