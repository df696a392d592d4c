#include "tools/optimize/overlay_mount.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "base/logging.h"
#include "fmt/format.h"

namespace lazypull::optimize {

absl::StatusOr<std::unique_ptr<OverlayMount>> OverlayMount::Mount(
    const std::vector<std::string>& lowerdirs, const std::string& upperdir,
    const std::string& workdir, const std::string& target) {
  if (lowerdirs.empty()) return absl::InvalidArgumentError("overlay: no lower directory");
  std::vector<std::string> all = lowerdirs;
  all.push_back(upperdir);
  all.push_back(workdir);
  for (const std::string& p : all) {
    if (p.find_first_of(":,") != std::string::npos) {
      return absl::InvalidArgumentError(fmt::format("overlay: path {} holds ':' or ','", p));
    }
  }
  std::string options = fmt::format("lowerdir={},upperdir={},workdir={}",
                                    absl::StrJoin(lowerdirs, ":"), upperdir, workdir);
  if (options.size() >= static_cast<size_t>(getpagesize())) {
    return absl::InvalidArgumentError(
        fmt::format("overlay: {} layers make an option string of {} bytes (limit {})",
                    lowerdirs.size(), options.size(), getpagesize() - 1));
  }
  if (::mount("overlay", target.c_str(), "overlay", 0, options.c_str()) != 0) {
    return absl::InternalError(
        fmt::format("mount overlay at {} ({}): {}", target, options, strerror(errno)));
  }
  return std::unique_ptr<OverlayMount>(new OverlayMount(target));
}

absl::Status OverlayMount::Unmount() {
  if (!mounted_) return absl::OkStatus();
  if (::umount2(target_.c_str(), 0) != 0) {
    return absl::InternalError(fmt::format("umount {}: {}", target_, strerror(errno)));
  }
  mounted_ = false;
  return absl::OkStatus();
}

OverlayMount::~OverlayMount() {
  if (!mounted_) return;
  if (::umount2(target_.c_str(), 0) == 0) return;
  int err = errno;
  if (::umount2(target_.c_str(), MNT_DETACH) != 0) {
    LogError("cannot unmount overlay",
             {{"path", target_}, {"error", strerror(err)}, {"detach_error", strerror(errno)}});
  }
}

}  // namespace lazypull::optimize
