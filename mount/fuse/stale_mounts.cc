#include "mount/fuse/stale_mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "base/logging.h"
#include "fmt/format.h"

namespace lazypull::mount {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() + 1 &&
        std::all_of(s.begin() + i + 1, s.begin() + i + 4,
                    [](char c) { return c >= '0' && c <= '7'; })) {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool IsAtOrBelow(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                          path[root.size()] == '/');
}

}  // namespace

absl::StatusOr<std::vector<MountPoint>> MountsUnder(const std::string& root) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return absl::InternalError("cannot read /proc/self/mountinfo");
  std::string clean_root = root;
  while (clean_root.size() > 1 && clean_root.back() == '/') clean_root.pop_back();
  std::vector<MountPoint> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, fsroot, mountpoint, word;
    fields >> id >> parent >> devno >> fsroot >> mountpoint;
    while (fields >> word && word != "-") {
    }
    std::string fstype, source;
    fields >> fstype >> source;
    std::string path = Unescape(mountpoint);
    if (IsAtOrBelow(path, clean_root)) out.push_back({path, fstype, Unescape(source)});
  }
  std::stable_sort(out.begin(), out.end(), [](const MountPoint& a, const MountPoint& b) {
    return a.path.size() > b.path.size();
  });
  return out;
}

bool IsStaleFuseMount(const std::string& path) {
  // statfs always reaches the FUSE daemon; stat may be answered from cached attributes.
  struct statfs sfs;
  if (statfs(path.c_str(), &sfs) != 0) return errno == ENOTCONN;
  struct stat st;
  return stat(path.c_str(), &st) != 0 && errno == ENOTCONN;
}

absl::StatusOr<std::vector<std::string>> DetachStaleFuseMounts(const std::string& root,
                                                               const std::set<std::string>& skip) {
  auto mounts = MountsUnder(root);
  if (!mounts.ok()) return mounts.status();
  std::vector<std::string> detached;
  absl::Status first_error;
  for (const MountPoint& m : *mounts) {
    // Only our own mounts: probing a live but hung foreign FUSE daemon could block.
    if (m.fstype != kLazypullFuseType || skip.count(m.path) > 0 || !IsStaleFuseMount(m.path)) {
      continue;
    }
    if (umount2(m.path.c_str(), MNT_DETACH) != 0) {
      absl::Status st = absl::InternalError(
          fmt::format("detaching stale FUSE mount {}: {}", m.path, strerror(errno)));
      LogWarn("cannot detach stale FUSE mount", {{"path", m.path}, {"error", st.ToString()}});
      if (first_error.ok()) first_error = st;
      continue;
    }
    LogInfo("detached stale FUSE mount", {{"path", m.path}, {"fstype", m.fstype}});
    detached.push_back(m.path);
  }
  if (!first_error.ok()) return first_error;
  return detached;
}

}  // namespace lazypull::mount
