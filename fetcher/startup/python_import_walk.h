// WalkPythonImports: the modules a starting Python program will import, walked ahead of the
// interpreter over an image's file tree, so that they are fetched one round trip per level of
// the import graph instead of one miss per module.
//
// Two ways in:
//   - from .pyc files the interpreter started reading (PythonWalkStart::pycs): their
//     module-level imports (python/pyc_imports.h), resolved as the interpreter would
//     (python/module_finder.h: the module's own package first, then the search path), then
//     the imports of those, level by level;
//   - from a CPython interpreter being executed (PythonWalkStart::interpreter,
//     "/usr/bin/python3.11"): what every CPython start reads before the program's own
//     imports — the `encodings` package with its aliases and the UTF-8 codec (the locale
//     encoding under C.UTF-8, to which CPython >= 3.7 coerces the C locale), `site`,
//     `sitecustomize` and `usercustomize`, the *.pth files of the site directories and the
//     modules their `import` lines load — plus the C library's locale data for C.UTF-8, its
//     gconv module cache and /etc/localtime, which the interpreter's initialization reads;
//     and, when its arguments are known, what they name: the imports of `-c` code
//     (python/source_imports.h), a `-m` module, or a script and its imports (the script's
//     directory first).
//
// Each round hands every new file to `fetch` at once (whole files; one request per layer in
// the caller); .pyc and .pth files of the round are read back and parsed for the next. Only
// the module-level code of a module is followed: imports inside functions run when called.
//
// Bounded: at most options.max_files files and max_bytes bytes fetched, max_rounds rounds,
// files over max_file_bytes are skipped. Untrusted input (the image's .pyc and .pth files)
// only reaches the bounded parsers.
//
// Thread-safety: a function; `tree` and the callbacks are used on the calling thread only.
#ifndef LAZYPULL_FETCHER_STARTUP_PYTHON_IMPORT_WALK_H_
#define LAZYPULL_FETCHER_STARTUP_PYTHON_IMPORT_WALK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fetcher/elf/file_tree.h"

namespace lazypull::startup {

struct PythonWalkOptions {
  size_t max_files = 384;
  uint64_t max_bytes = 24 << 20;
  size_t max_rounds = 24;
  uint64_t max_file_bytes = 4 << 20;
};

struct PythonWalkStart {
  std::vector<std::string> pycs;  // absolute, symlink-free
  std::string interpreter;        // absolute, symlink-free; empty: none
  // The interpreter's arguments (argv[1:]), when known (an image config's Entrypoint + Cmd),
  // and the directory a relative script name is found in.
  std::vector<std::string> argv;
  std::string working_dir = "/";
};

// One file to fetch whole; `read` asks for its bytes back (to parse it).
struct PythonFetch {
  std::string path;  // absolute, symlink-free
  uint64_t size = 0;
  bool read = false;
};

// Fetches every file of `files` whole (starting all before waiting for any) and returns, in
// the same order, the bytes of those with `read` (an error or empty string for the others).
using PythonFetchFn =
    std::function<std::vector<absl::StatusOr<std::string>>(std::span<const PythonFetch> files)>;
// The names in directory `dir` (absolute) of the image's merged tree; empty if none.
using ListDirFn = std::function<std::vector<std::string>(std::string_view dir)>;

struct PythonWalkResult {
  size_t rounds = 0;
  size_t files = 0;                   // fetched
  uint64_t bytes = 0;                 // their uncompressed size
  size_t modules_parsed = 0;          // .pyc files whose imports were followed
  std::vector<std::string> parsed;    // those .pyc paths (a prefetcher need not walk them again)
  std::vector<std::string> problems;  // unparsable files, budget hits
  bool truncated = false;             // a bound stopped the walk
};

PythonWalkResult WalkPythonImports(const elf::FileTree& tree, const ListDirFn& list_dir,
                                   const PythonFetchFn& fetch, const PythonWalkStart& start,
                                   const PythonWalkOptions& options = {});

// The modules a line of a .pth file imports (site executes lines that start with "import"):
// `import a, b.c` and `__import__('d')`. Other lines (paths, comments) give none.
std::vector<std::string> PthImports(std::string_view line);

}  // namespace lazypull::startup

#endif  // LAZYPULL_FETCHER_STARTUP_PYTHON_IMPORT_WALK_H_
