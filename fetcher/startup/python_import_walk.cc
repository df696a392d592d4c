#include "fetcher/startup/python_import_walk.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "base/split_view.h"
#include "fetcher/python/module_finder.h"
#include "fetcher/python/pyc_imports.h"
#include "fetcher/python/source_imports.h"
#include "fmt/format.h"

namespace lazypull::startup {

namespace {

using python::ModuleFile;
using python::ModuleFinder;

std::string_view Dirname(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos || slash == 0 ? std::string_view("/")
                                                       : path.substr(0, slash);
}

// The directory relative imports of a module file start from: a package's own directory,
// else the directory of its source (a .pyc sits in <dir>/__pycache__).
std::string ImportBase(const ModuleFile& m) {
  if (!m.package_dir.empty()) return m.package_dir;
  std::string_view dir = Dirname(m.path);
  if (dir.ends_with("/__pycache__")) dir = Dirname(dir);
  return std::string(dir);
}

class Walk {
 public:
  Walk(const elf::FileTree& tree, const ListDirFn& list_dir, const PythonFetchFn& fetch,
       const PythonWalkOptions& options)
      : tree_(tree), list_dir_(list_dir), fetch_(fetch), options_(options) {}

  PythonWalkResult Run(const PythonWalkStart& start) {
    for (const std::string& pyc : start.pycs) {
      const ModuleFinder* finder = FinderForPyc(pyc);
      if (finder == nullptr) continue;
      std::string_view dir = Dirname(pyc);
      if (dir.ends_with("/__pycache__")) dir = Dirname(dir);
      Add(pyc, Kind::kPyc, finder, std::string(dir));
    }
    if (!start.interpreter.empty()) AddInterpreterStart(start);
    while (!frontier_.empty()) {
      if (result_.rounds >= options_.max_rounds) {
        Truncate(fmt::format("{} rounds", options_.max_rounds));
        break;
      }
      ++result_.rounds;
      std::vector<Item> round = std::move(frontier_);
      frontier_.clear();
      std::vector<PythonFetch> files;
      files.reserve(round.size());
      for (const Item& item : round) {
        files.push_back({item.path, item.size, item.kind != Kind::kPlain});
      }
      std::vector<absl::StatusOr<std::string>> bytes = fetch_(files);
      for (size_t i = 0; i < round.size() && i < bytes.size(); ++i) {
        if (round[i].kind == Kind::kPlain) continue;
        if (!bytes[i].ok()) {
          Problem(round[i].path, bytes[i].status().ToString());
          continue;
        }
        switch (round[i].kind) {
          case Kind::kPyc:
            Follow(round[i], *bytes[i]);
            break;
          case Kind::kScript:
            ++result_.modules_parsed;
            FollowImports(python::SourceImports(*bytes[i]), *round[i].finder, round[i].base,
                          Reading::kScript);
            break;
          case Kind::kPth:
            FollowPth(round[i], *bytes[i]);
            break;
          case Kind::kPlain:
            break;
        }
      }
    }
    return std::move(result_);
  }

 private:
  enum class Kind { kPyc, kScript, kPth, kPlain };
  // How an import's module name is looked up: from a module (absolute, and inside a package
  // also relative to it, as the level is not kept), from a script (its directory first, as
  // sys.path[0]), or from code without a directory (`-c`, .pth lines: absolute).
  enum class Reading { kModule, kScript, kAbsolute };
  struct Item {
    std::string path;
    uint64_t size = 0;
    Kind kind = Kind::kPlain;
    const ModuleFinder* finder = nullptr;
    std::string base;  // where its relative imports start
  };

  const ModuleFinder* FinderForPyc(std::string_view pyc) {
    std::optional<ModuleFinder> f = ModuleFinder::ForPyc(tree_, pyc);
    if (!f) return nullptr;
    return Keep(*std::move(f));
  }

  const ModuleFinder* Keep(ModuleFinder&& f) {
    auto [it, fresh] = finders_.try_emplace(
        fmt::format("{}\n{}\n{}", f.stdlib(), f.cache_tag(), f.frozen_modules()), std::move(f));
    return &it->second;
  }

  void Truncate(std::string_view why) {
    if (!result_.truncated) result_.problems.push_back(fmt::format("walk truncated: {}", why));
    result_.truncated = true;
  }

  void Problem(std::string_view path, std::string_view what) {
    if (result_.problems.size() < 64) result_.problems.push_back(fmt::format("{}: {}", path, what));
  }

  // Queues `path` (any path; symlinks resolved) for the next round, within the budgets.
  void Add(const std::string& path, Kind kind, const ModuleFinder* finder, std::string base) {
    absl::StatusOr<elf::ResolvedPath> r = elf::ResolvePath(tree_, path);
    if (!r.ok() || r->node.kind != elf::FileNode::Kind::kRegular) return;
    if (!seen_.insert(r->path).second) return;
    if (r->node.size > options_.max_file_bytes) return;
    if (result_.files >= options_.max_files) {
      Truncate(fmt::format("{} files", options_.max_files));
      return;
    }
    if (result_.bytes + r->node.size > options_.max_bytes) {
      Truncate(fmt::format("{} bytes", options_.max_bytes));
      return;
    }
    ++result_.files;
    result_.bytes += r->node.size;
    frontier_.push_back({r->path, r->node.size, kind, finder, std::move(base)});
  }

  void AddModules(const std::vector<ModuleFile>& modules, const ModuleFinder* finder) {
    for (const ModuleFile& m : modules) {
      if (m.path.empty()) continue;  // a namespace package or a frozen module: no file
      Add(m.path, m.kind == ModuleFile::Kind::kBytecode ? Kind::kPyc : Kind::kPlain, finder,
          ImportBase(m));
    }
  }

  void AddInterpreterStart(const PythonWalkStart& start) {
    const std::string& interpreter = start.interpreter;
    std::optional<std::pair<int, int>> version =
        python::InterpreterVersion(interpreter.substr(interpreter.rfind('/') + 1));
    if (!version) return;
    std::optional<ModuleFinder> found =
        ModuleFinder::ForVersion(tree_, version->first, version->second, interpreter);
    if (!found) return;
    const CommandLine cl = ParseCommandLine(start.argv);
    if (std::find(cl.x_options.begin(), cl.x_options.end(), "frozen_modules=off") !=
        cl.x_options.end()) {
      found = found->WithoutFrozenModules();
    }
    const ModuleFinder* finder = Keep(*std::move(found));
    // The C library's data the interpreter's initialization reads (setlocale under the
    // coerced C.UTF-8 locale, the codeset's gconv cache, tzset).
    for (const std::string& file :
         {std::string("/usr/lib/locale/C.utf8/LC_CTYPE"),
          std::string("/usr/lib/locale/C.UTF-8/LC_CTYPE"),
          fmt::format("/usr/lib/{}/gconv/gconv-modules.cache", python::HostMultiarch()),
          std::string("/etc/localtime")}) {
      Add(file, Kind::kPlain, finder, "");
    }
    std::vector<ModuleFile> encodings = finder->FindAbsolute("encodings");
    AddModules(encodings, finder);
    if (!encodings.empty() && !encodings.back().package_dir.empty()) {
      for (const char* codec : {"aliases", "utf_8"}) {
        if (auto m = finder->FindIn(encodings.back().package_dir, codec)) AddModules({*m}, finder);
      }
    }
    for (const char* module : {"site", "sitecustomize", "usercustomize"}) {
      AddModules(finder->FindAbsolute(module), finder);
    }
    for (const std::string& dir : finder->SiteDirs()) {
      std::vector<std::string> names = list_dir_(dir);
      std::sort(names.begin(), names.end());
      for (const std::string& name : names) {
        if (name.ends_with(".pth")) Add(fmt::format("{}/{}", dir, name), Kind::kPth, finder, dir);
      }
    }
    AddCommandLine(start, cl, *finder);
  }

  // The interpreter's own command line: its -X options, and what it runs (the first of -c,
  // -m, a script or "-"; the arguments after it are the program's).
  struct CommandLine {
    enum class Runs { kNothing, kCode, kModule, kScript };
    std::vector<std::string> x_options;  // "-X frozen_modules=off" -> "frozen_modules=off"
    Runs runs = Runs::kNothing;
    std::string what;  // the code, the module or the script's path as given
  };

  static CommandLine ParseCommandLine(const std::vector<std::string>& argv) {
    CommandLine cl;
    for (size_t i = 0; i < argv.size(); ++i) {
      const std::string& a = argv[i];
      const bool next = i + 1 < argv.size();
      for (auto [flag, runs] : {std::pair{"-c", CommandLine::Runs::kCode},
                                std::pair{"-m", CommandLine::Runs::kModule}}) {
        if (!a.starts_with(flag)) continue;
        if (a.size() == 2 && !next) return cl;
        cl.runs = runs;
        cl.what = a.size() > 2 ? a.substr(2) : argv[i + 1];
        return cl;
      }
      if (a.starts_with("-X")) {
        if (a.size() > 2) {
          cl.x_options.push_back(a.substr(2));
        } else if (next) {
          cl.x_options.push_back(argv[++i]);
        }
        continue;
      }
      if (a == "-W" || a == "--check-hash-based-pycs") {
        ++i;  // the option's value
        continue;
      }
      if (a == "-" || a == "--") return cl;
      if (a.starts_with("-")) continue;
      cl.runs = CommandLine::Runs::kScript;
      cl.what = a;
      return cl;
    }
    return cl;
  }

  // What the interpreter's arguments name: `-c CODE` (its imports), `-m MODULE` (the module,
  // and a package's __main__), or a script (fetched, its imports followed).
  void AddCommandLine(const PythonWalkStart& start, const CommandLine& cl,
                      const ModuleFinder& finder) {
    switch (cl.runs) {
      case CommandLine::Runs::kNothing:
        return;
      case CommandLine::Runs::kCode:
        FollowImports(python::SourceImports(cl.what), finder, "", Reading::kAbsolute);
        return;
      case CommandLine::Runs::kModule:
        FollowImports({{cl.what, {}}, {cl.what + ".__main__", {}}}, finder, "", Reading::kAbsolute);
        return;
      case CommandLine::Runs::kScript: {
        std::string script = cl.what.starts_with("/") ? cl.what : start.working_dir + "/" + cl.what;
        std::string dir(Dirname(script));
        Add(script, Kind::kScript, &finder, std::move(dir));
        return;
      }
    }
  }

  void Follow(const Item& item, std::string_view bytes) {
    absl::StatusOr<python::PycInfo> info = python::ParsePycImports(bytes);
    if (!info.ok()) {
      Problem(item.path, info.status().ToString());
      return;
    }
    ++result_.modules_parsed;
    result_.parsed.push_back(item.path);
    FollowImports(info->imports, *item.finder, item.base, Reading::kModule);
  }

  void FollowImports(const std::vector<python::PycImport>& imports, const ModuleFinder& finder,
                     const std::string& base, Reading reading) {
    const bool in_package = reading == Reading::kModule &&
                            std::find(finder.search_path().begin(), finder.search_path().end(),
                                      base) == finder.search_path().end();
    for (const python::PycImport& import : imports) {
      if (import.module.empty()) {
        // `from . import a, b`: submodules of the module's own package.
        if (reading != Reading::kModule) continue;
        std::vector<ModuleFile> found;
        for (const std::string& name : import.names) {
          if (auto m = finder.FindIn(base, name)) found.push_back(*std::move(m));
        }
        AddModules(found, &finder);
        continue;
      }
      // The relative level is not in the names: the absolute reading, and inside a package
      // also the relative one (`from .x import y`) when it exists. A script's directory
      // comes first on its search path.
      std::vector<std::vector<ModuleFile>> readings;
      if (reading == Reading::kScript) {
        std::vector<ModuleFile> local = finder.FindFrom(base, import.module);
        readings.push_back(local.empty() ? finder.FindAbsolute(import.module) : std::move(local));
      } else {
        readings.push_back(finder.FindAbsolute(import.module));
        if (in_package) readings.push_back(finder.FindFrom(base, import.module));
      }
      for (const std::vector<ModuleFile>& modules : readings) {
        AddModules(modules, &finder);
        if (modules.empty() || modules.back().package_dir.empty()) continue;
        // `from package import name`: a name may be a submodule.
        std::vector<ModuleFile> subs;
        for (const std::string& name : import.names) {
          if (auto m = finder.FindIn(modules.back().package_dir, name)) {
            subs.push_back(*std::move(m));
          }
        }
        AddModules(subs, &finder);
      }
    }
  }

  void FollowPth(const Item& item, std::string_view bytes) {
    for (std::string_view line : SplitView(bytes, '\n')) {
      std::vector<python::PycImport> imports;
      for (std::string& module : PthImports(line)) imports.push_back({std::move(module), {}});
      FollowImports(imports, *item.finder, "", Reading::kAbsolute);
    }
  }

  const elf::FileTree& tree_;
  const ListDirFn& list_dir_;
  const PythonFetchFn& fetch_;
  const PythonWalkOptions& options_;
  std::map<std::string, ModuleFinder> finders_;  // node-stable: items point into it
  absl::flat_hash_set<std::string> seen_;
  std::vector<Item> frontier_;
  PythonWalkResult result_;
};

}  // namespace

std::vector<std::string> PthImports(std::string_view line) {
  std::vector<std::string> out;
  // site.py executes only the lines that start with "import".
  if (!line.starts_with("import ") && !line.starts_with("import\t")) return out;
  for (python::PycImport& i : python::SourceImports(line)) {
    if (!i.module.empty() && std::find(out.begin(), out.end(), i.module) == out.end()) {
      out.push_back(std::move(i.module));
    }
  }
  return out;
}

PythonWalkResult WalkPythonImports(const elf::FileTree& tree, const ListDirFn& list_dir,
                                   const PythonFetchFn& fetch, const PythonWalkStart& start,
                                   const PythonWalkOptions& options) {
  return Walk(tree, list_dir, fetch, options).Run(start);
}

}  // namespace lazypull::startup
