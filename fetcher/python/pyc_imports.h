// PycImports: the modules a compiled Python module (.pyc) imports when it is executed, read
// from its bytecode, so a prefetcher can fetch them before the interpreter asks, one round
// trip per level of the import graph instead of one miss per module.
//
// Python's import chain is invisible from the outside: each module names the next only in its
// bytecode, and interpreters import dozens of small modules from many directories at start.
// The module-level code object of a .pyc names them in IMPORT_NAME / IMPORT_FROM
// instructions; imports inside functions run only when the function is called and are left
// out (most are lazy on purpose).
//
// Format: a 16-byte header (magic: two bytes of version tag then "\r\n"; flags; mtime+size or
// a source hash), then the marshal serialization of the module's code object (CPython's
// Python/marshal.c, object types and FLAG_REF back-references). Supported: CPython 3.7 up to
// 3.13 (magic 3390–3599); code object layouts of 3.7, 3.8–3.10 and 3.11+. For 3.7–3.12 the
// instructions are decoded (wordcode: IMPORT_NAME 108, IMPORT_FROM 109, EXTENDED_ARG 144);
// for 3.13, whose opcode numbers moved, every name of the module-level code is returned as
// a candidate (a resolver only keeps names that exist as modules).
//
// Untrusted input: every length is checked against the bytes present, nesting depth and
// object count are bounded (PycLimits), and back-references must point to earlier objects.
// Errors: InvalidArgument "not a .pyc" for another magic; Unimplemented for an unsupported
// version; DataLoss for malformed marshal data; ResourceExhausted over a limit.
//
// Thread-safety: a pure function.
#ifndef LAZYPULL_FETCHER_PYTHON_PYC_IMPORTS_H_
#define LAZYPULL_FETCHER_PYTHON_PYC_IMPORTS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lazypull::python {

// Whether `head` (the first bytes of a file, at least 4) starts like a .pyc of a supported
// CPython version.
bool IsPycMagic(std::string_view head);

struct PycLimits {
  size_t max_depth = 64;         // nesting of containers and code objects
  size_t max_objects = 1 << 20;  // marshal objects in the file
  size_t max_imports = 512;      // import statements kept
};

// One import statement of the module-level code: `import a.b` (module "a.b", no names),
// `from a import x, y` (module "a", names x, y), `from . import x` (module "", names x).
// The relative level is not kept (a resolver tries the module's own package first).
struct PycImport {
  std::string module;
  std::vector<std::string> names;
  bool operator==(const PycImport&) const = default;
};

struct PycInfo {
  uint32_t magic = 0;  // the version number (e.g. 3495 for CPython 3.11)
  // In order of the bytecode. When `decoded` is false (an interpreter whose opcodes are not
  // known), every name of the module-level code is one entry with no `names`.
  std::vector<PycImport> imports;
  bool decoded = true;
};

absl::StatusOr<PycInfo> ParsePycImports(std::string_view bytes, const PycLimits& limits = {});

}  // namespace lazypull::python

#endif  // LAZYPULL_FETCHER_PYTHON_PYC_IMPORTS_H_
