// libFuzzer target: ParseElf on untrusted bytes, whole and incrementally.
// Input: one byte that picks the size of the first "read" (× 64 bytes), then the file.
// Oracle: the incremental parse (start from the head, add exactly the ranges it asks for)
// ends within a few rounds and agrees with the whole-file parse (both fail or both give the
// same result). EmbeddedPaths over the same bytes: bounded, and every result an absolute path.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fetcher/elf/elf_parser.h"
#include "fetcher/elf/embedded_paths.h"
#include "fetcher/elf/file_bytes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull;
  using namespace lazypull::elf;
  if (size < 1) return 0;
  std::string_view file(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t head = std::min<size_t>(file.size(), size_t{data[0]} * 64);

  ElfLimits limits;
  limits.max_program_headers = 64;
  limits.max_needed = 32;
  limits.max_dynamic_entries = 512;
  auto whole = ParseElf(file, file.size(), limits);
  if (whole.ok()) {
    if (!whole->complete()) abort();  // every byte was there
    for (const ByteRange& r : whole->LoadRanges()) {
      if (r.end() > file.size()) abort();
    }
  }

  EmbeddedPathOptions path_options;
  path_options.max_paths = 64;
  const std::vector<std::string> paths = EmbeddedPaths(file, path_options);
  if (paths.size() > path_options.max_paths) abort();
  for (const std::string& p : paths) {
    if (p.empty() || p.front() != '/' || p.size() > path_options.max_length) abort();
  }

  FileBytes bytes(file.size());
  bytes.Add(0, file.substr(0, head));
  for (int round = 0;; ++round) {
    auto info = ParseElf(bytes, limits);
    if (!info.ok()) {
      // Which error comes first may differ (the bytes arrive in another order); that one
      // does is what must hold.
      if (whole.ok()) abort();
      break;
    }
    if (info->complete()) {
      if (!whole.ok()) abort();
      if (info->needed != whole->needed || info->interpreter != whole->interpreter ||
          info->soname != whole->soname || info->rpath != whole->rpath ||
          info->runpath != whole->runpath || info->loads.size() != whole->loads.size()) {
        abort();
      }
      break;
    }
    if (round >= 6) abort();  // the rounds must end: header, phdrs, dynamic, strings
    for (const ByteRange& r : info->missing) {
      if (r.length == 0 || r.end() > file.size()) abort();
      if (bytes.Get(r.offset, r.length).has_value()) abort();  // asked for held bytes
      bytes.Add(r.offset, file.substr(r.offset, r.length));
    }
  }
  return 0;
}
