// SplitView: the pieces of a std::string_view between separators, as views into it.
//
// absl::StrSplit takes absl::string_view, which in Debian's abseil build is its own type, not
// std::string_view; this keeps std::string_view code free of conversions. Every separator
// splits (empty pieces are kept: "a,,b" gives "a", "", "b"; "" gives one empty piece).
// Thread-safety: a pure function; the views live as long as `s`'s bytes.
#ifndef LAZYPULL_BASE_SPLIT_VIEW_H_
#define LAZYPULL_BASE_SPLIT_VIEW_H_

#include <string_view>
#include <vector>

namespace lazypull {

inline std::vector<std::string_view> SplitView(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t end = s.find(sep, start);
    if (end == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
}

}  // namespace lazypull

#endif  // LAZYPULL_BASE_SPLIT_VIEW_H_
