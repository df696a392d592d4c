#include "tools/rpull/pull_progress.h"

#include "fmt/format.h"

namespace lazypull::rpull {
namespace {

constexpr int kBarWidth = 30;
// Redrawing more often only costs terminal bandwidth.
constexpr std::chrono::milliseconds kRedrawInterval{100};

}  // namespace

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1000) return fmt::format("{} B", bytes);
  const char* units[] = {"kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes) / 1000;
  int u = 0;
  while (v >= 1000 && u < 3) {
    v /= 1000;
    ++u;
  }
  return fmt::format("{:.1f} {}", v, units[u]);
}

std::string PullProgress::LayerPrefix(size_t index, const Digest& digest) const {
  return fmt::format("layer {}/{} sha256:{}", index + 1, layer_count_, digest.hex().substr(0, 12));
}

void PullProgress::OnResolved(const std::string& image_name, const oci::Descriptor& manifest,
                              size_t layer_count) {
  layer_count_ = layer_count;
  fmt::print(out_, "{}: resolved manifest {} ({} layers)\n", image_name, manifest.digest.ToString(),
             layer_count);
  std::fflush(out_);
}

void PullProgress::OnLayerStart(size_t index, const oci::Descriptor& layer) {
  bar_shown_ = false;
  digest_ = layer.digest;
  if (tty_) {
    fmt::print(out_, "{} ...", LayerPrefix(index, layer.digest));
    std::fflush(out_);
  }
}

void PullProgress::OnLayerBytes(size_t index, uint64_t bytes, uint64_t total) {
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (bar_shown_ && bytes < total && now - last_draw_ < kRedrawInterval) return;
  last_draw_ = now;
  bar_shown_ = true;
  const int filled = total == 0 ? kBarWidth : static_cast<int>(kBarWidth * bytes / total);
  fmt::print(out_, "\r\033[K{} downloading [{}{}] {}/{}", LayerPrefix(index, digest_),
             std::string(filled, '='), std::string(kBarWidth - filled, ' '), HumanBytes(bytes),
             HumanBytes(total));
  std::fflush(out_);
}

void PullProgress::OnLayerDone(size_t index, const LayerReport& report) {
  std::string what;
  switch (report.outcome) {
    case LayerOutcome::kLazy:
      what = report.format.empty()
                 ? fmt::format("lazy ({} compressed, mounted from the registry)",
                               HumanBytes(static_cast<uint64_t>(report.layer.size)))
                 : fmt::format("lazy ({}) {} compressed, mounted from the registry", report.format,
                               HumanBytes(static_cast<uint64_t>(report.layer.size)));
      break;
    case LayerOutcome::kDownloaded:
      what = fmt::format("downloaded {}", HumanBytes(report.bytes_downloaded));
      break;
    case LayerOutcome::kAlreadyThere:
      what = "already unpacked";
      break;
  }
  if (tty_) fmt::print(out_, "\r\033[K");
  fmt::print(out_, "{} {} in {:.2f}s\n", LayerPrefix(index, report.layer.digest), what,
             report.seconds);
  std::fflush(out_);
}

void PullProgress::PrintSummary(const PullResult& result, double seconds) {
  size_t lazy = 0, downloaded = 0;
  uint64_t bytes = 0;
  for (const LayerReport& l : result.layers) {
    if (l.outcome == LayerOutcome::kLazy) ++lazy;
    if (l.outcome == LayerOutcome::kDownloaded) ++downloaded;
    bytes += l.bytes_downloaded;
  }
  fmt::print(out_, "{}: pulled in {:.2f}s: {} lazy, {} downloaded ({}), {} already unpacked\n",
             result.image_name, seconds, lazy, downloaded, HumanBytes(bytes),
             result.layers.size() - lazy - downloaded);
  std::fflush(out_);
}

}  // namespace lazypull::rpull
