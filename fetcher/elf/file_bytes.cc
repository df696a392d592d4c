#include "fetcher/elf/file_bytes.h"

#include <algorithm>
#include <iterator>

namespace lazypull::elf {

uint64_t FileBytes::bytes_held() const {
  uint64_t n = 0;
  for (const auto& [offset, data] : pieces_) n += data.size();
  return n;
}

void FileBytes::Add(uint64_t offset, std::string_view data) {
  if (offset >= file_size_ || data.empty()) return;
  data = data.substr(0, file_size_ - offset);
  uint64_t begin = offset;
  uint64_t end = offset + data.size();
  // First piece that could touch [begin, end]: the last one starting at or before `begin`.
  auto it = pieces_.upper_bound(begin);
  if (it != pieces_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.size() >= begin) it = prev;
  }
  std::string merged;
  uint64_t merged_begin = begin;
  uint64_t merged_end = end;
  auto first = it;
  while (it != pieces_.end() && it->first <= end) {
    merged_begin = std::min(merged_begin, it->first);
    merged_end = std::max<uint64_t>(merged_end, it->first + it->second.size());
    ++it;
  }
  merged.resize(merged_end - merged_begin);
  for (auto p = first; p != it; ++p) {
    std::copy(p->second.begin(), p->second.end(), merged.begin() + (p->first - merged_begin));
  }
  std::copy(data.begin(), data.end(), merged.begin() + (begin - merged_begin));
  pieces_.erase(first, it);
  pieces_.emplace(merged_begin, std::move(merged));
}

std::optional<std::string_view> FileBytes::Get(uint64_t offset, uint64_t length) const {
  if (offset > file_size_ || length > file_size_ - offset) return std::nullopt;
  if (length == 0) return std::string_view();
  std::string_view v = GetPrefix(offset, length);
  if (v.size() != length) return std::nullopt;
  return v;
}

std::string_view FileBytes::GetPrefix(uint64_t offset, uint64_t max_length) const {
  auto it = pieces_.upper_bound(offset);
  if (it == pieces_.begin()) return {};
  --it;
  uint64_t inner = offset - it->first;
  if (inner >= it->second.size()) return {};
  return std::string_view(it->second).substr(inner, max_length);
}

std::vector<ByteRange> FileBytes::Missing(ByteRange range) const {
  std::vector<ByteRange> out;
  if (range.offset >= file_size_) return out;
  uint64_t pos = range.offset;
  uint64_t end = range.offset + std::min(range.length, file_size_ - range.offset);
  auto it = pieces_.upper_bound(pos);
  if (it != pieces_.begin()) --it;
  for (; pos < end && it != pieces_.end(); ++it) {
    uint64_t piece_end = it->first + it->second.size();
    if (piece_end <= pos) continue;
    if (it->first >= end) break;
    if (it->first > pos) out.push_back({pos, it->first - pos});
    pos = piece_end;
  }
  if (pos < end) out.push_back({pos, end - pos});
  return out;
}

std::vector<ByteRange> CoalesceRanges(std::vector<ByteRange> ranges, uint64_t gap) {
  std::erase_if(ranges, [](const ByteRange& r) { return r.length == 0; });
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  std::vector<ByteRange> out;
  for (const ByteRange& r : ranges) {
    if (!out.empty() && (r.offset <= out.back().end() || r.offset - out.back().end() <= gap)) {
      uint64_t end = std::max(out.back().end(), r.end());
      out.back().length = end - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace lazypull::elf
