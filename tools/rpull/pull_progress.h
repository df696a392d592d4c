// PullProgress: what `lazypull rpull` shows while it pulls — one line per layer (lazy,
// downloaded bytes, time), with a live progress bar for downloads when the output is a
// terminal and plain lines otherwise (logs, CI).
#ifndef LAZYPULL_TOOLS_RPULL_PULL_PROGRESS_H_
#define LAZYPULL_TOOLS_RPULL_PULL_PROGRESS_H_

#include <chrono>
#include <cstdio>
#include <string>

#include "tools/rpull/image_puller.h"

namespace lazypull::rpull {

// Writes to `out` (not owned; must outlive this). `tty` selects the progress bar (redrawn in
// place with '\r') over plain lines. Thread-compatible: called from the pulling thread.
class PullProgress : public PullObserver {
 public:
  PullProgress(std::FILE* out, bool tty) : out_(out), tty_(tty) {}

  void OnResolved(const std::string& image_name, const oci::Descriptor& manifest,
                  size_t layer_count) override;
  void OnLayerStart(size_t index, const oci::Descriptor& layer) override;
  void OnLayerBytes(size_t index, uint64_t bytes, uint64_t total) override;
  void OnLayerDone(size_t index, const LayerReport& report) override;

  // The closing line: image name and totals.
  void PrintSummary(const PullResult& result, double seconds);

 private:
  std::string LayerPrefix(size_t index, const Digest& digest) const;

  std::FILE* out_;
  bool tty_;
  size_t layer_count_ = 0;
  bool bar_shown_ = false;
  Digest digest_;  // of the layer being unpacked
  std::chrono::steady_clock::time_point last_draw_{};
};

// "12.3 MB" style sizes (powers of 1000, as registries and ctr print them).
std::string HumanBytes(uint64_t bytes);

}  // namespace lazypull::rpull

#endif  // LAZYPULL_TOOLS_RPULL_PULL_PROGRESS_H_
