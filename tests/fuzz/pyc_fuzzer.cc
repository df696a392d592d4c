// libFuzzer target: ParsePycImports on untrusted .pyc bytes (an image's compiled modules, read
// by the Python import prefetch). Oracle: no crash, leak or UB; a success keeps its bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fetcher/python/pyc_imports.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::python;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  PycLimits limits;
  limits.max_depth = 32;
  limits.max_objects = 1 << 14;
  limits.max_imports = 64;
  auto info = ParsePycImports(bytes, limits);
  if (info.ok()) {
    if (info->imports.size() > limits.max_imports) abort();
    for (const PycImport& i : info->imports) {
      if (i.names.size() > limits.max_imports) abort();
    }
  }
  return 0;
}
