#include "fetcher/python/module_finder.h"

#include <algorithm>
#include <charconv>

#include "base/split_view.h"
#include "fmt/format.h"

namespace lazypull::python {

namespace {

// The multiarch tuple in extension module names; lazypull serves images of its own
// architecture.
#if defined(__x86_64__)
constexpr std::string_view kMultiarch = "x86_64-linux-gnu";
#elif defined(__aarch64__)
constexpr std::string_view kMultiarch = "aarch64-linux-gnu";
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
constexpr std::string_view kMultiarch = "powerpc64le-linux-gnu";
#elif defined(__s390x__)
constexpr std::string_view kMultiarch = "s390x-linux-gnu";
#else
constexpr std::string_view kMultiarch = "";
#endif

// The standard library modules CPython freezes into the interpreter since 3.11: those its
// startup imports with and without site, and runpy's for -m (3.11's
// `_imp._frozen_module_names()` without the test modules). A version that froze fewer would
// only cost prefetch misses: the interpreter reads such a file and the read fetches it.
constexpr std::string_view kFrozenStdlib[] = {"abc",
                                              "codecs",
                                              "io",
                                              "_collections_abc",
                                              "_sitebuiltins",
                                              "genericpath",
                                              "ntpath",
                                              "posixpath",
                                              "os",
                                              "os.path",
                                              "site",
                                              "stat",
                                              "importlib.util",
                                              "importlib.machinery",
                                              "runpy",
                                              "zipimport"};

std::string Join(std::string_view dir, std::string_view name) {
  if (dir.empty() || dir.back() != '/') return fmt::format("{}/{}", dir, name);
  return fmt::format("{}{}", dir, name);
}

bool ValidComponent(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos && name.size() <= 255;
}

std::optional<int> ToInt(std::string_view s) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

std::string_view HostMultiarch() { return kMultiarch; }

std::optional<std::pair<int, int>> InterpreterVersion(std::string_view basename) {
  if (!basename.starts_with("python")) return std::nullopt;
  std::string_view v = basename.substr(6);
  const size_t dot = v.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  std::optional<int> major = ToInt(v.substr(0, dot));
  std::optional<int> minor = ToInt(v.substr(dot + 1));
  if (!major || !minor || *major < 2 || *major > 9 || *minor > 99) return std::nullopt;
  return std::pair{*major, *minor};
}

bool ModuleFinder::IsFile(const std::string& path, std::string* resolved) const {
  absl::StatusOr<elf::ResolvedPath> r = elf::ResolvePath(*tree_, path);
  if (!r.ok() || r->node.kind != elf::FileNode::Kind::kRegular) return false;
  if (resolved) *resolved = r->path;
  return true;
}

bool ModuleFinder::IsDir(const std::string& path) const {
  absl::StatusOr<elf::ResolvedPath> r = elf::ResolvePath(*tree_, path);
  return r.ok() && r->node.kind == elf::FileNode::Kind::kDirectory;
}

std::optional<ModuleFinder> ModuleFinder::ForVersion(const elf::FileTree& tree, int major,
                                                     int minor, std::string_view path_hint) {
  const std::string version = fmt::format("python{}.{}", major, minor);
  std::vector<std::string> prefixes;
  if (size_t lib = path_hint.find("/lib/python"); lib != std::string_view::npos) {
    prefixes.emplace_back(path_hint.substr(0, lib));
  } else if (size_t bin = path_hint.rfind("/bin/"); bin != std::string_view::npos) {
    prefixes.emplace_back(path_hint.substr(0, bin));
  }
  prefixes.emplace_back("/usr/local");
  prefixes.emplace_back("/usr");
  ModuleFinder probe(tree, "", "", {}, false);
  for (const std::string& prefix : prefixes) {
    std::string stdlib = fmt::format("{}/lib/{}", prefix, version);
    if (!probe.IsDir(stdlib)) continue;
    std::vector<std::string> path;
    for (std::string dir :
         {stdlib, stdlib + "/lib-dynload", stdlib + "/site-packages",
          fmt::format("/usr/local/lib/{}/dist-packages", version),
          major == 3 ? std::string("/usr/lib/python3/dist-packages") : std::string(),
          fmt::format("/usr/lib/{}/dist-packages", version)}) {
      if (dir.empty() || std::find(path.begin(), path.end(), dir) != path.end()) continue;
      if (probe.IsDir(dir)) path.push_back(std::move(dir));
    }
    return ModuleFinder(tree, std::move(stdlib), fmt::format("cpython-{}{}", major, minor),
                        std::move(path), major == 3 && minor >= 11);
  }
  return std::nullopt;
}

std::optional<ModuleFinder> ModuleFinder::ForPyc(const elf::FileTree& tree,
                                                 std::string_view pyc_path) {
  std::string_view base = pyc_path.substr(pyc_path.rfind('/') + 1);
  if (!base.ends_with(".pyc")) return std::nullopt;
  base.remove_suffix(4);
  const size_t dot = base.rfind('.');
  if (dot == std::string_view::npos) return std::nullopt;
  std::string_view tag = base.substr(dot + 1);
  if (!tag.starts_with("cpython-") || tag.size() < 10) return std::nullopt;
  std::optional<int> major = ToInt(tag.substr(8, 1));
  std::optional<int> minor = ToInt(tag.substr(9));
  if (!major || !minor) return std::nullopt;
  return ForVersion(tree, *major, *minor, pyc_path);
}

std::vector<std::string> ModuleFinder::SiteDirs() const {
  std::vector<std::string> out;
  for (const std::string& dir : search_path_) {
    if (dir.ends_with("/site-packages") || dir.ends_with("/dist-packages")) out.push_back(dir);
  }
  return out;
}

ModuleFinder ModuleFinder::WithoutFrozenModules() const {
  ModuleFinder f = *this;
  f.frozen_modules_ = false;
  return f;
}

bool ModuleFinder::IsFrozen(std::string_view dir, std::string_view name) const {
  if (!frozen_modules_) return false;
  // Frozen modules are the standard library's: their dotted name is their path below it.
  std::string_view rest = dir;
  if (!rest.starts_with(stdlib_)) return false;
  rest.remove_prefix(stdlib_.size());
  if (!rest.empty() && rest.front() != '/') return false;
  std::string dotted;
  for (std::string_view part : SplitView(rest, '/')) {
    if (part.empty()) continue;
    dotted.append(part).push_back('.');
  }
  dotted.append(name);
  return std::find(std::begin(kFrozenStdlib), std::end(kFrozenStdlib), dotted) !=
         std::end(kFrozenStdlib);
}

std::optional<ModuleFile> ModuleFinder::FindIn(std::string_view dir, std::string_view name) const {
  if (!ValidComponent(name)) return std::nullopt;
  // The frozen importer comes before the path finder: no file is read.
  if (IsFrozen(dir, name)) return ModuleFile{ModuleFile::Kind::kFrozen, "", ""};
  std::string resolved;
  const std::string pkg = Join(dir, name);
  bool namespace_dir = false;
  if (IsDir(pkg)) {
    const std::string cached = fmt::format("{}/__pycache__/__init__.{}.pyc", pkg, cache_tag_);
    if (IsFile(pkg + "/__init__.py", &resolved)) {
      if (IsFile(cached, &resolved)) return ModuleFile{ModuleFile::Kind::kBytecode, resolved, pkg};
      return ModuleFile{ModuleFile::Kind::kSource, resolved, pkg};
    }
    if (IsFile(pkg + "/__init__.pyc", &resolved)) {
      return ModuleFile{ModuleFile::Kind::kBytecode, resolved, pkg};
    }
    namespace_dir = true;
  }
  std::vector<std::string> extensions;
  if (!kMultiarch.empty()) extensions.push_back(fmt::format(".{}-{}.so", cache_tag_, kMultiarch));
  extensions.emplace_back(".abi3.so");
  extensions.emplace_back(".so");
  for (const std::string& suffix : extensions) {
    if (IsFile(fmt::format("{}{}", pkg, suffix), &resolved)) {
      return ModuleFile{ModuleFile::Kind::kExtension, resolved, ""};
    }
  }
  if (IsFile(pkg + ".py", &resolved)) {
    std::string source = resolved;
    if (IsFile(fmt::format("{}/__pycache__/{}.{}.pyc", dir, name, cache_tag_), &resolved)) {
      return ModuleFile{ModuleFile::Kind::kBytecode, resolved, ""};
    }
    return ModuleFile{ModuleFile::Kind::kSource, source, ""};
  }
  if (IsFile(pkg + ".pyc", &resolved)) return ModuleFile{ModuleFile::Kind::kBytecode, resolved, ""};
  if (namespace_dir) return ModuleFile{ModuleFile::Kind::kNamespace, "", pkg};
  return std::nullopt;
}

std::vector<ModuleFile> ModuleFinder::FindFrom(std::string_view dir,
                                               std::string_view dotted) const {
  std::vector<ModuleFile> out;
  std::string current(dir);
  for (std::string_view part : SplitView(dotted, '.')) {
    if (current.empty()) break;  // the previous module is no package
    std::optional<ModuleFile> found = FindIn(current, part);
    if (!found) break;
    current = found->package_dir;
    out.push_back(*std::move(found));
  }
  return out;
}

std::vector<ModuleFile> ModuleFinder::FindAbsolute(std::string_view dotted) const {
  const size_t dot = dotted.find('.');
  std::string_view first = dotted.substr(0, dot);
  for (const std::string& dir : search_path_) {
    std::optional<ModuleFile> top = FindIn(dir, first);
    if (!top) continue;
    std::vector<ModuleFile> out{*top};
    if (dot != std::string_view::npos && !top->package_dir.empty()) {
      std::vector<ModuleFile> rest = FindFrom(top->package_dir, dotted.substr(dot + 1));
      out.insert(out.end(), rest.begin(), rest.end());
    }
    return out;
  }
  return {};
}

}  // namespace lazypull::python
