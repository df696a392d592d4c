#include "tests/deploy/node_sandbox.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/subprocess.h"

namespace lazypull::testing {
namespace {

absl::Status Mount(const std::string& source, const std::string& target, const char* type,
                   unsigned long flags, const std::string& data = "") {
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) !=
      0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mount ", source, " on ", target));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EnterNodeSandbox(const std::string& work_dir) {
  if (::unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) {
    return absl::ErrnoToStatus(errno, "unshare(CLONE_NEWNS | CLONE_NEWNET)");
  }
  if (absl::Status s = Mount("none", "/", nullptr, MS_REC | MS_PRIVATE); !s.ok()) return s;
  absl::StatusOr<CommandResult> lo = RunCommand({"ip", "link", "set", "lo", "up"});
  if (!lo.ok()) return lo.status();
  if (lo->exit_code != 0) return absl::InternalError("ip link set lo up: " + lo->output);
  for (const char* dir : {"/run", "/var/lib"}) {
    if (absl::Status s = Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); !s.ok()) return s;
  }
  const std::string scratch = work_dir + "/etc-overlay";
  std::filesystem::create_directories(scratch);
  if (absl::Status s = Mount("tmpfs", scratch, "tmpfs", 0); !s.ok()) return s;
  std::filesystem::create_directories(scratch + "/upper");
  std::filesystem::create_directories(scratch + "/work");
  return Mount(
      "overlay", "/etc", "overlay", 0,
      absl::StrCat("lowerdir=/etc,upperdir=", scratch, "/upper,workdir=", scratch, "/work"));
}

absl::Status BindMount(const std::string& source, const std::string& target, bool read_only) {
  std::error_code ec;
  if (std::filesystem::is_directory(source)) {
    std::filesystem::create_directories(target, ec);
  } else {
    std::filesystem::create_directories(std::filesystem::path(target).parent_path(), ec);
    std::ofstream(target, std::ios::app).close();
  }
  if (absl::Status s = Mount(source, target, nullptr, MS_BIND | MS_REC); !s.ok()) return s;
  if (read_only) {
    return Mount("none", target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC);
  }
  return absl::OkStatus();
}

}  // namespace lazypull::testing
