#include "fetcher/python/source_imports.h"

#include <cctype>
#include <string>

#include "base/split_view.h"

namespace lazypull::python {

namespace {

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.';
}

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '(')) {
    s.remove_prefix(1);
  }
  return s;
}

// The dotted name at the start of `s` (after blanks), and the rest after it.
std::string_view TakeName(std::string_view& s) {
  s = TrimLeft(s);
  size_t n = 0;
  while (n < s.size() && IsNameChar(s[n])) ++n;
  std::string_view name = s.substr(0, n);
  s.remove_prefix(n);
  return name;
}

bool TakeKeyword(std::string_view& s, std::string_view word) {
  std::string_view t = TrimLeft(s);
  if (!t.starts_with(word) || t.size() == word.size() ||
      (t[word.size()] != ' ' && t[word.size()] != '\t')) {
    return false;
  }
  s = t.substr(word.size());
  return true;
}

// `a, b.c as d` → {"a", "b.c"} (names starting with a dot dropped: not absolute modules).
std::vector<std::string> NameList(std::string_view s) {
  std::vector<std::string> out;
  for (std::string_view part : SplitView(s, ',')) {
    std::string_view name = TakeName(part);
    if (!name.empty() && name.front() != '.') out.emplace_back(name);
  }
  return out;
}

}  // namespace

std::vector<PycImport> SourceImports(std::string_view source, size_t max_imports) {
  std::vector<PycImport> out;
  auto add = [&](PycImport i) {
    if (out.size() < max_imports) out.push_back(std::move(i));
  };
  for (std::string_view line : SplitView(source, '\n')) {
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    for (std::string_view stmt : SplitView(line, ';')) {
      if (TakeKeyword(stmt, "import")) {
        for (std::string& name : NameList(stmt)) add({std::move(name), {}});
      } else if (TakeKeyword(stmt, "from")) {
        std::string_view module = TakeName(stmt);
        if (module.empty() || !TakeKeyword(stmt, "import")) continue;
        while (!module.empty() && module.front() == '.') module.remove_prefix(1);
        std::string_view names = stmt;
        if (const size_t close = names.find(')'); close != std::string_view::npos) {
          names = names.substr(0, close);
        }
        add({std::string(module), NameList(names)});
      }
    }
  }
  for (size_t at = source.find("__import__("); at != std::string_view::npos;
       at = source.find("__import__(", at + 1)) {
    size_t p = at + 11;
    if (p >= source.size() || (source[p] != '\'' && source[p] != '"')) continue;
    const char quote = source[p++];
    const size_t end = source.find(quote, p);
    if (end == std::string_view::npos) break;
    std::string_view name = source.substr(p, end - p);
    bool valid = !name.empty() && name.front() != '.';
    for (char c : name) valid = valid && IsNameChar(c);
    if (valid) add({std::string(name), {}});
  }
  return out;
}

}  // namespace lazypull::python
