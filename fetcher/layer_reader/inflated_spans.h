// InflatedSpans: the few SOCI spans a layer inflated last (LayerReader), so neighbouring files
// in one span — or the pieces of one file the kernel reads in several requests — inflate it
// once. Holds only spans whose compressed bytes were verified before they were inflated.
// Thread-safe.
#ifndef LAZYPULL_FETCHER_LAYER_READER_INFLATED_SPANS_H_
#define LAZYPULL_FETCHER_LAYER_READER_INFLATED_SPANS_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "lazypull/blob_reader.h"

namespace lazypull {

class InflatedSpans {
 public:
  // Spans kept (each up to the zTOC's span size, 4 MiB by default).
  static constexpr size_t kCapacity = 4;

  // The inflated span whose compressed range is `range`, or null.
  std::shared_ptr<const std::string> Get(ByteRange range) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = recent_.begin(); it != recent_.end(); ++it) {
      if (it->first.offset != range.offset || it->first.length != range.length) continue;
      recent_.splice(recent_.begin(), recent_, it);
      return it->second;
    }
    return nullptr;
  }

  void Put(ByteRange range, std::shared_ptr<const std::string> span) {
    std::lock_guard<std::mutex> lock(mu_);
    recent_.remove_if([&](const auto& e) {
      return e.first.offset == range.offset && e.first.length == range.length;
    });
    recent_.emplace_front(range, std::move(span));
    if (recent_.size() > kCapacity) recent_.pop_back();
  }

 private:
  std::mutex mu_;
  std::list<std::pair<ByteRange, std::shared_ptr<const std::string>>> recent_;  // newest first
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_INFLATED_SPANS_H_
