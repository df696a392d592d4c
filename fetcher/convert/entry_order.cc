#include "fetcher/convert/entry_order.h"

#include <map>

namespace lazypull::convert {
namespace {

using tar::EntryType;
using tar::TarEntry;

class Orderer {
 public:
  Orderer(const std::vector<TarEntry>& entries, const std::set<std::string>& drop)
      : entries_(entries) {
    std::map<std::string, size_t> last;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].type == EntryType::kGlobalHeader) continue;
      std::string clean = tar::CleanEntryName(entries[i].name);
      if (drop.count(clean)) continue;
      last[clean] = i;
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].type == EntryType::kGlobalHeader) {
        stream_order_.push_back(i);
        continue;
      }
      auto it = last.find(tar::CleanEntryName(entries[i].name));
      if (it != last.end() && it->second == i) {
        stream_order_.push_back(i);
        pending_[it->first] = i;
      }
    }
  }

  // Moves `raw` (after its parents and hardlink target) to the prioritized part. False if no
  // entry has that name.
  bool Prioritize(const std::string& raw) {
    std::string name = tar::CleanEntryName(raw);
    if (name.empty()) {
      MoveIfPending(name);
      return true;
    }
    if (!pending_.count(name) && !moved_.count(name)) return false;
    if (!visiting_.insert(name).second) return true;  // a hardlink cycle
    size_t slash = name.rfind('/');
    Prioritize(slash == std::string::npos ? "" : name.substr(0, slash));
    auto it = pending_.find(name);
    if (it != pending_.end() && entries_[it->second].type == EntryType::kHardlink) {
      Prioritize(entries_[it->second].linkname);
    }
    MoveIfPending(name);
    visiting_.erase(name);
    return true;
  }

  EntryOrder Finish() {
    EntryOrder out;
    out.prioritized = std::move(prioritized_);
    for (size_t i : stream_order_) {
      if (!taken_.count(i)) out.rest.push_back(i);
    }
    return out;
  }

 private:
  void MoveIfPending(const std::string& name) {
    auto it = pending_.find(name);
    if (it == pending_.end()) return;
    prioritized_.push_back(it->second);
    taken_.insert(it->second);
    moved_.insert(name);
    pending_.erase(it);
  }

  const std::vector<TarEntry>& entries_;
  std::vector<size_t> stream_order_;        // last entry of each name, in stream order
  std::map<std::string, size_t> pending_;   // not yet prioritized, by clean name
  std::set<std::string> moved_, visiting_;  // clean names
  std::set<size_t> taken_;
  std::vector<size_t> prioritized_;
};

}  // namespace

EntryOrder OrderEntries(const std::vector<tar::TarEntry>& entries,
                        const EntryOrderOptions& options) {
  Orderer orderer(entries, options.drop_names);
  std::vector<std::string> missing;
  for (const std::string& p : options.prioritized) {
    if (!orderer.Prioritize(p)) missing.push_back(p);
  }
  EntryOrder order = orderer.Finish();
  order.missing = std::move(missing);
  return order;
}

}  // namespace lazypull::convert
