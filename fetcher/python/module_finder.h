// ModuleFinder: which file of an image CPython reads for `import name`, found the way its
// path-based finder (importlib's FileFinder) does, over an image's file tree (elf::FileTree)
// rather than the local filesystem, so a prefetcher can fetch it before the interpreter asks.
//
// The search path is the one a CPython X.Y of the image starts with (sys.path without the
// script's directory): its standard library directory (<prefix>/lib/pythonX.Y), lib-dynload,
// site-packages, and Debian's dist-packages (/usr/local/lib/pythonX.Y/dist-packages,
// /usr/lib/python3/dist-packages), those that exist. Within a directory, in FileFinder's
// order: a package directory (its __init__), an extension module
// (<name>.<cache_tag>-<multiarch>.so, <name>.abi3.so, <name>.so), a source module (its
// cached __pycache__/<name>.<cache_tag>.pyc when present: that is what the interpreter reads,
// the source is only stat()ed), a sourceless <name>.pyc.
//
// CPython >= 3.11 runs the standard library modules of its own startup (os, site, codecs,
// io, abc, stat, posixpath, ...) from copies frozen into the interpreter, ahead of the path
// finder, and reads none of their files (unless started with -X frozen_modules=off): those
// names resolve to a kFrozen ModuleFile with no path, so a walk neither fetches them nor
// follows their imports (which are other frozen or built-in modules).
//
// Thread-safety: immutable after construction; the tree must outlive the finder and be
// thread-safe itself for concurrent use.
#ifndef LAZYPULL_FETCHER_PYTHON_MODULE_FINDER_H_
#define LAZYPULL_FETCHER_PYTHON_MODULE_FINDER_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fetcher/elf/file_tree.h"

namespace lazypull::python {

// The file an import reads, and for a package the directory its submodules live in.
struct ModuleFile {
  enum class Kind { kBytecode, kSource, kExtension, kNamespace, kFrozen };
  Kind kind = Kind::kBytecode;
  std::string path;         // absolute, symlink-free; empty for a namespace package and a
                            // frozen module
  std::string package_dir;  // non-empty for a package
  bool operator==(const ModuleFile&) const = default;
};

class ModuleFinder {
 public:
  // The finder of CPython `major`.`minor` in `tree`, or nullopt when the image has no
  // standard library directory for it. `path_hint` (a file of that Python, e.g. a .pyc or the
  // interpreter) picks the prefix first: "/usr/local/bin/python3.11" → /usr/local.
  static std::optional<ModuleFinder> ForVersion(const elf::FileTree& tree, int major, int minor,
                                                std::string_view path_hint);

  // The finder for the interpreter that wrote `pyc_path` ("<dir>/__pycache__/<module>.
  // cpython-311.pyc"; the version comes from the cache tag), or nullopt.
  static std::optional<ModuleFinder> ForPyc(const elf::FileTree& tree, std::string_view pyc_path);

  // This finder with the interpreter's frozen modules off (`-X frozen_modules=off`): they
  // are found as files like any other module.
  ModuleFinder WithoutFrozenModules() const;
  bool frozen_modules() const { return frozen_modules_; }

  // Module `name` (one component, no dots) in directory `dir`, or nullopt.
  std::optional<ModuleFile> FindIn(std::string_view dir, std::string_view name) const;

  // Top-level module `dotted` ("a.b.c"), resolved on the search path: the files of every
  // package on the way and of the module itself, in import order (empty if not found).
  std::vector<ModuleFile> FindAbsolute(std::string_view dotted) const;

  // Like FindAbsolute, starting in directory `dir` (a package's directory, for a relative
  // import) instead of the search path.
  std::vector<ModuleFile> FindFrom(std::string_view dir, std::string_view dotted) const;

  const std::string& stdlib() const { return stdlib_; }
  const std::string& cache_tag() const { return cache_tag_; }
  const std::vector<std::string>& search_path() const { return search_path_; }
  // The search-path directories where site processes *.pth files (site-/dist-packages).
  std::vector<std::string> SiteDirs() const;

 private:
  ModuleFinder(const elf::FileTree& tree, std::string stdlib, std::string cache_tag,
               std::vector<std::string> search_path, bool frozen_modules)
      : tree_(&tree),
        stdlib_(std::move(stdlib)),
        cache_tag_(std::move(cache_tag)),
        search_path_(std::move(search_path)),
        frozen_modules_(frozen_modules) {}
  bool IsFile(const std::string& path, std::string* resolved) const;
  bool IsDir(const std::string& path) const;
  // Whether module `name` in `dir` is one the interpreter runs frozen.
  bool IsFrozen(std::string_view dir, std::string_view name) const;

  const elf::FileTree* tree_;
  std::string stdlib_;     // "/usr/lib/python3.11"
  std::string cache_tag_;  // "cpython-311"
  std::vector<std::string> search_path_;
  bool frozen_modules_ = false;  // CPython >= 3.11 with its frozen standard modules on
};

// The multiarch tuple of the machine lazypull runs on ("x86_64-linux-gnu"; empty if unknown),
// as in extension module names and /usr/lib/<multiarch>.
std::string_view HostMultiarch();

// "python3.11" → {3, 11}; nullopt for other names (a bare "python3" names no minor version).
std::optional<std::pair<int, int>> InterpreterVersion(std::string_view basename);

}  // namespace lazypull::python

#endif  // LAZYPULL_FETCHER_PYTHON_MODULE_FINDER_H_
