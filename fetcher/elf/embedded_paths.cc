#include "fetcher/elf/embedded_paths.h"

#include <array>

#include "absl/container/flat_hash_set.h"

namespace lazypull::elf {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '+' || c == '@';
}

// An absolute path of at least two components, each of name characters, none "." or "..".
bool LooksLikePath(std::string_view s) {
  if (s.size() < 2 || s.front() != '/' || s.back() == '/') return false;
  size_t components = 0;
  size_t pos = 1;
  while (pos <= s.size()) {
    size_t end = s.find('/', pos);
    if (end == std::string_view::npos) end = s.size();
    std::string_view name = s.substr(pos, end - pos);
    if (name.empty() || name == "." || name == "..") return false;
    for (char c : name) {
      if (!IsNameChar(c)) return false;
    }
    ++components;
    pos = end + 1;
  }
  return components >= 2;
}

bool LooksLikeConfigName(std::string_view s) {
  if (s.size() > 64) return false;
  for (char c : s) {
    if (!IsNameChar(c)) return false;
  }
  static constexpr std::array<std::string_view, 4> kSuffixes = {".cnf", ".conf", ".cfg", ".ini"};
  for (std::string_view suffix : kSuffixes) {
    if (s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> EmbeddedPaths(std::string_view data, const EmbeddedPathOptions& options) {
  std::vector<std::string> paths;
  std::vector<std::string_view> names;
  absl::flat_hash_set<std::string_view> seen;
  size_t start = 0;  // the current string begins here (just after a NUL)
  while (start < data.size() && paths.size() < options.max_paths) {
    size_t nul = data.find('\0', start);
    if (nul == std::string_view::npos) break;  // unterminated: not a C string
    std::string_view s = data.substr(start, nul - start);
    start = nul + 1;
    if (s.empty() || s.size() > options.max_length) continue;
    if (s.front() == '/') {
      if (s.size() >= options.min_length && LooksLikePath(s) && seen.insert(s).second) {
        paths.emplace_back(s);
      }
    } else if (names.size() < options.max_config_names && LooksLikeConfigName(s) &&
               seen.insert(s).second) {
      names.push_back(s);
    }
  }
  const size_t found = paths.size();
  for (std::string_view name : names) {
    for (size_t i = 0; i < found && paths.size() < options.max_paths; ++i) {
      std::string joined = paths[i] + "/" + std::string(name);
      if (joined.size() <= options.max_length) paths.push_back(std::move(joined));
    }
  }
  return paths;
}

}  // namespace lazypull::elf
