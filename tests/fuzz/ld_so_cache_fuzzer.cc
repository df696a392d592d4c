// libFuzzer target: LdSoCache::Parse on untrusted bytes; every parsed entry must be found
// again by Lookup under its own flags.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fetcher/elf/ld_so_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::elf;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto cache = LdSoCache::Parse(bytes, {.max_entries = 4096, .max_string = 1024});
  if (!cache.ok()) return 0;
  for (const LdSoCacheEntry& e : cache->entries()) {
    if (e.soname.size() > 1024 || e.path.size() > 1024) abort();
    int32_t flags[] = {e.flags};
    if (!cache->Lookup(e.soname, flags).has_value()) abort();
  }
  return 0;
}
