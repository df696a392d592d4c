// SourceImports: the import statements of Python source text, found line by line without a
// Python parser — for code the interpreter compiles itself at start (a `-c` argument, a
// script named on the command line, an `import` line of a .pth file), where no .pyc exists.
//
// Recognized, at the start of a logical line or after a `;` (leading blanks ignored):
// `import a, b.c as d` and `from a.b import c, d` / `from . import x` / `from .m import (x,
// y)` (parentheses on one line). `__import__('name')` calls anywhere in the text count as
// `import name`. Anything else (imports inside strings that look like statements, multi-line
// parenthesized lists, conditional imports) is found or missed as the text happens to be laid
// out: the result is a prefetch candidate list, checked against the image by the caller.
//
// Thread-safety: a pure function.
#ifndef LAZYPULL_FETCHER_PYTHON_SOURCE_IMPORTS_H_
#define LAZYPULL_FETCHER_PYTHON_SOURCE_IMPORTS_H_

#include <cstddef>
#include <string_view>
#include <vector>

#include "fetcher/python/pyc_imports.h"

namespace lazypull::python {

// Imports in order of appearance, at most `max_imports`; a relative import's module keeps its
// leading dots stripped (like PycImport: "" for `from . import x`).
std::vector<PycImport> SourceImports(std::string_view source, size_t max_imports = 256);

}  // namespace lazypull::python

#endif  // LAZYPULL_FETCHER_PYTHON_SOURCE_IMPORTS_H_
