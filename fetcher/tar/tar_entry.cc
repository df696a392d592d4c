#include "fetcher/tar/tar_entry.h"

#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace lazypull::tar {

std::string CleanEntryName(const std::string& name) {
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.emplace_back(part);
  }
  return absl::StrJoin(parts, "/");
}

}  // namespace lazypull::tar
