#include "fetcher/elf/library_resolver.h"

#include <algorithm>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::elf {
namespace {

constexpr size_t kMaxSearchDirs = 256;  // elements of RPATH/RUNPATH considered per object

bool IsIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::vector<std::string_view> SplitColon(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= s.size() && out.size() < kMaxSearchDirs) {
    size_t j = s.find(':', i);
    if (j == std::string_view::npos) j = s.size();
    out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string out(dir);
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out != "/") out += '/';
  out += name;
  return out;
}

}  // namespace

std::string_view LibrarySourceName(LibrarySource source) {
  switch (source) {
    case LibrarySource::kPath:
      return "path";
    case LibrarySource::kRpath:
      return "rpath";
    case LibrarySource::kRunpath:
      return "runpath";
    case LibrarySource::kCache:
      return "ld.so.cache";
    case LibrarySource::kDefaultDir:
      return "default";
  }
  return "?";
}

std::string DirName(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

LibraryResolver::LibraryResolver(const FileTree* tree, const LdSoCache* cache, Abi abi)
    : tree_(tree), cache_(cache), abi_(std::move(abi)) {}

std::optional<std::string> LibraryResolver::ExpandTokens(std::string_view text,
                                                         std::string_view origin) const {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '$') {
      out += text[i++];
      continue;
    }
    std::string_view rest = text.substr(i + 1);
    std::string_view name;
    size_t used = 0;
    if (!rest.empty() && rest[0] == '{') {
      size_t close = rest.find('}');
      if (close != std::string_view::npos) {
        name = rest.substr(1, close - 1);
        used = close + 1;
      }
    } else {
      size_t n = 0;
      while (n < rest.size() && IsIdentChar(rest[n])) ++n;
      name = rest.substr(0, n);
      used = n;
    }
    const std::string* value = nullptr;
    std::string origin_s(origin);
    if (name == "ORIGIN") {
      value = &origin_s;
    } else if (name == "LIB") {
      value = &abi_.lib;
    } else if (name == "PLATFORM") {
      value = &abi_.platform;
    }
    if (value == nullptr) {  // not a token ld.so knows: kept as written
      out += '$';
      ++i;
      continue;
    }
    if (value->empty()) return std::nullopt;
    out += *value;
    i += 1 + used;
  }
  return out;
}

absl::StatusOr<std::vector<ResolvedLibrary>> LibraryResolver::Candidates(
    std::string_view needed, std::span<const LoaderObject> chain, size_t max) const {
  std::vector<ResolvedLibrary> out;
  if (needed.empty() || chain.empty() || max == 0) return out;
  const LoaderObject& loader = chain.front();
  // Returns true when `max` candidates were found.
  auto try_path = [&](const std::string& path, LibrarySource source) -> absl::StatusOr<bool> {
    if (path.empty() || path[0] != '/') return false;
    auto r = ResolvePath(*tree_, path);
    if (!r.ok()) {
      if (absl::IsNotFound(r.status()) || absl::IsFailedPrecondition(r.status()) ||
          absl::IsInvalidArgument(r.status())) {
        return false;
      }
      return r.status();
    }
    if (r->node.kind != FileNode::Kind::kRegular) return false;
    for (const ResolvedLibrary& c : out) {
      if (c.real_path == r->path) return false;
    }
    out.push_back({path, r->path, r->node.size, source});
    return out.size() >= max;
  };
  auto try_dirs = [&](std::string_view list, const LoaderObject& owner,
                      LibrarySource source) -> absl::StatusOr<bool> {
    for (std::string_view element : SplitColon(list)) {
      auto dir = ExpandTokens(element, owner.origin);
      if (!dir || dir->empty() || (*dir)[0] != '/') continue;
      auto full = try_path(JoinPath(*dir, needed), source);
      if (!full.ok() || *full) return full;
    }
    return false;
  };

  if (needed.find('/') != std::string_view::npos) {
    auto path = ExpandTokens(needed, loader.origin);
    if (path) {
      std::string p = (*path)[0] == '/' ? *path : JoinPath("/", *path);
      auto done = try_path(p, LibrarySource::kPath);
      if (!done.ok()) return done.status();
    }
    return out;
  }
  if (!loader.runpath) {
    for (const LoaderObject& owner : chain) {
      if (!owner.rpath) continue;
      auto done = try_dirs(*owner.rpath, owner, LibrarySource::kRpath);
      if (!done.ok()) return done.status();
      if (*done) return out;
    }
  }
  if (loader.runpath) {
    auto done = try_dirs(*loader.runpath, loader, LibrarySource::kRunpath);
    if (!done.ok()) return done.status();
    if (*done) return out;
  }
  if (loader.nodeflib) return out;
  if (cache_ != nullptr && !abi_.cache_flags.empty()) {
    if (auto hit = cache_->Lookup(needed, abi_.cache_flags)) {
      auto done = try_path(std::string(*hit), LibrarySource::kCache);
      if (!done.ok()) return done.status();
      if (*done) return out;
    }
  }
  for (const std::string& dir : abi_.default_dirs) {
    auto done = try_path(JoinPath(dir, needed), LibrarySource::kDefaultDir);
    if (!done.ok()) return done.status();
    if (*done) return out;
  }
  return out;
}

absl::StatusOr<ResolvedLibrary> LibraryResolver::Resolve(
    std::string_view needed, std::span<const LoaderObject> chain) const {
  auto all = Candidates(needed, chain, 1);
  if (!all.ok()) return all.status();
  if (all->empty()) {
    const LoaderObject* loader = chain.empty() ? nullptr : &chain.front();
    return absl::NotFoundError(fmt::format(
        "{}: not found (rpath \"{}\", runpath \"{}\", ld.so.cache {}, {} default directories)",
        needed, loader && loader->rpath ? *loader->rpath : "",
        loader && loader->runpath ? *loader->runpath : "", cache_ ? "searched" : "absent",
        abi_.default_dirs.size()));
  }
  return std::move(all->front());
}

}  // namespace lazypull::elf
