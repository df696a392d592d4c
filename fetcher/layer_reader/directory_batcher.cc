#include "fetcher/layer_reader/directory_batcher.h"

#include <sys/stat.h>

#include <algorithm>
#include <string_view>
#include <vector>

namespace lazypull {
namespace {

std::string_view Extension(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos || dot == 0 ? std::string_view() : name.substr(dot);
}

}  // namespace

size_t DirectoryBatcher::Plan(
    const format::LayerIndex& index, format::Ino ino, uint64_t link_bdp,
    const std::function<bool(const format::Chunk&, uint64_t batch_id)>& claim) {
  // A directory's first miss is not evidence that its files are read together (a program
  // reading one config file would pull its neighbours): its second one is.
  const format::Ino dir = index.Parent(ino);
  if (!missed_dirs_.contains(dir)) {
    if (missed_dirs_.size() >= kMaxMissedDirs) missed_dirs_.clear();
    missed_dirs_.insert(dir);
    return 0;
  }
  if (budget_ == 0) {
    budget_ = link_bdp > 0 ? 2 * link_bdp : options_.initial_budget;
  } else if (current_.issued > 0) {
    if (current_.used * 2 >= current_.issued) {
      budget_ *= 2;
    } else if (current_.used * 4 < current_.issued) {
      budget_ /= 2;
    }
  }
  budget_ = std::clamp(budget_, options_.min_budget, options_.max_budget);

  const size_t count = index.ChildCount(dir);
  // The missed file's position among its siblings (children are sorted by name).
  const std::string_view name = index.Name(ino);
  size_t pos = 0;
  {
    size_t lo = 0, hi = count;
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if (index.Child(dir, mid).name < name) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    pos = lo;
  }
  // Nearest first, alternating after and before, within max_scan.
  std::vector<format::Ino> order;
  order.reserve(std::min(count, options_.max_scan));
  for (size_t d = 1; order.size() < options_.max_scan && (pos + d < count || d <= pos); ++d) {
    if (pos + d < count) order.push_back(index.Child(dir, pos + d).ino);
    if (d <= pos && order.size() < options_.max_scan)
      order.push_back(index.Child(dir, pos - d).ino);
  }
  const std::string_view ext = Extension(name);
  const uint64_t id = next_id_++;
  size_t claimed = 0;
  uint64_t spent = 0;
  for (int pass = 0; pass < 2 && spent < budget_; ++pass) {
    for (format::Ino sibling : order) {
      if (spent >= budget_) break;
      if (sibling == ino || (Extension(index.Name(sibling)) == ext) != (pass == 0)) continue;
      std::optional<format::InodeAttr> attr = index.GetAttr(sibling);
      if (!attr || !S_ISREG(attr->mode) || attr->size == 0 || attr->size > options_.small_file) {
        continue;
      }
      for (const format::Chunk& c : index.Chunks(sibling)) {
        if (c.compression == format::ChunkCompression::kZeros || !claim(c, id)) continue;
        ++claimed;
        spent += c.compressed_length;
      }
    }
  }
  current_ = Batch{.id = id, .issued = claimed, .used = 0};
  chunks_total_ += claimed;
  return claimed;
}

}  // namespace lazypull
