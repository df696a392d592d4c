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
  if (absl::Status s = Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); !s.ok()) return s;
  // /var/lib on the disk, not tmpfs: EROFS cannot mount image files kept on tmpfs.
  const std::string var_lib = work_dir + "/var-lib";
  std::filesystem::create_directories(var_lib);
  if (absl::Status s = Mount(var_lib, "/var/lib", nullptr, MS_BIND); !s.ok()) return s;
  for (const char* dir : {"/etc", "/usr"}) {
    const std::string scratch = work_dir + "/overlay" + std::string(dir);
    std::filesystem::create_directories(scratch);
    if (absl::Status s = Mount("tmpfs", scratch, "tmpfs", 0); !s.ok()) return s;
    std::filesystem::create_directories(scratch + "/upper");
    std::filesystem::create_directories(scratch + "/work");
    absl::Status s = Mount(
        "overlay", dir, "overlay", 0,
        absl::StrCat("lowerdir=", dir, ",upperdir=", scratch, "/upper,workdir=", scratch, "/work"));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
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
