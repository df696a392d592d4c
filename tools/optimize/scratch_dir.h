// ScratchDir: a fresh directory (mkdtemp) removed with everything in it on destruction.
//
// Callers unmount whatever they mounted below it first (removal never crosses into a mount
// still attached: see OverlayMount). Move-only; thread-compatible.
#ifndef LAZYPULL_TOOLS_OPTIMIZE_SCRATCH_DIR_H_
#define LAZYPULL_TOOLS_OPTIMIZE_SCRATCH_DIR_H_

#include <string>

#include "absl/status/statusor.h"

namespace lazypull::optimize {

class ScratchDir {
 public:
  // <parent>/<prefix>XXXXXX; `parent` empty = $TMPDIR or /tmp. Internal with errno text on
  // failure.
  static absl::StatusOr<ScratchDir> Create(const std::string& parent, const std::string& prefix);

  ScratchDir(ScratchDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  ScratchDir& operator=(ScratchDir&&) = delete;
  ScratchDir(const ScratchDir&) = delete;
  ~ScratchDir();

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace lazypull::optimize

#endif  // LAZYPULL_TOOLS_OPTIMIZE_SCRATCH_DIR_H_
