// libFuzzer target: TOC JSON → index, through both formats' entry semantics.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull;
  using namespace lazypull::format;
  std::string_view json(reinterpret_cast<const char*>(data), size);
  IndexBuildOptions options;
  options.allow_missing_digests = true;
  options.max_entries = 100000;
  const uint64_t kBlob = 1ull << 40;
  auto e = BuildEstargzIndex(json, kBlob / 2, kBlob, Digest(), options);
  if (e.ok()) ExerciseIndex(*e, nullptr);
  ZstdChunkedLocation loc;
  loc.manifest_offset = kBlob / 2;
  auto z = BuildZstdChunkedIndex(json, loc, kBlob, Digest(), options);
  if (z.ok()) ExerciseIndex(*z, nullptr);
  return 0;
}
