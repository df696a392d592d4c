// libFuzzer target: a whole eStargz blob (footer → TOC member → tar → JSON → index).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fetcher/format/estargz_reader.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull;
  using namespace lazypull::format;
  auto blob = NewStringBlobReader(std::string(reinterpret_cast<const char*>(data), size));
  FormatReadOptions options;
  options.build.allow_missing_digests = true;  // go past the digest gate
  options.max_toc_size = 8 << 20;
  auto index = ReadEstargzIndex(*blob, std::nullopt, options);
  if (index.ok()) ExerciseIndex(*index, blob.get());
  return 0;
}
