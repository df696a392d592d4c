// libFuzzer target: ScanTar over any byte stream (ustar, GNU long names, PAX records), checking
// the layout it promises: entries in stream order, each one's headers and payload inside the
// stream and before the trailer (the last entry's padding may be cut off by the stream end).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fetcher/tar/tar_scanner.h"
#include "lazypull/blob_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull;
  auto blob = NewStringBlobReader(std::string(reinterpret_cast<const char*>(data), size));
  tar::ScanOptions options;
  options.max_extension_size = 1 << 20;
  auto index = tar::ScanTar(*blob, options);
  if (!index.ok()) return 0;
  if (index->stream_size != size || index->trailer_offset > size) abort();
  uint64_t next = 0;
  for (const tar::TarEntry& e : index->entries) {
    if (e.header_offset < next || e.payload_offset < e.header_offset) abort();
    if (e.payload_offset > size || e.payload_size > size - e.payload_offset) abort();
    if (e.payload_offset + e.payload_size > index->trailer_offset) abort();
    next = std::min<uint64_t>(e.end_offset(), size);
  }
  return 0;
}
