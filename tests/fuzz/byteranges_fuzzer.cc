// libFuzzer target: a registry's multipart/byteranges answer (fetcher/registry/byteranges.h),
// fed to the streaming parser in pieces, and the Content-Range / Content-Type values alone.
// Input: 1 byte piece size, 8 bytes blob size (little-endian), then the body. Checks what the
// range reader relies on: every payload byte handed out lies inside [0, blob size), and a
// parsed Content-Range "FIRST-LAST" has length LAST - FIRST + 1 (no wrap-around).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>

#include "absl/status/status.h"
#include "fetcher/registry/byteranges.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull::registry;
  if (size < 9) return 0;
  const size_t piece = 1 + data[0];
  uint64_t blob_size = 0;
  for (int i = 0; i < 8; ++i) blob_size |= static_cast<uint64_t>(data[1 + i]) << (8 * i);
  std::string_view body(reinterpret_cast<const char*>(data + 9), size - 9);

  // The first line as a header value of either kind.
  std::string_view line = body.substr(0, body.find('\n'));
  (void)ByterangesBoundary(line);
  if (auto cr = ParseContentRange(line)) {
    if (cr->length == 0 || cr->length - 1 > std::numeric_limits<uint64_t>::max() - cr->offset) {
      abort();
    }
  }

  ByterangesParser parser("BOUNDARY", blob_size);
  uint64_t delivered = 0;
  auto sink = [&](uint64_t offset, std::string_view d) -> absl::Status {
    if (offset > blob_size || d.size() > blob_size - offset) abort();
    delivered += d.size();
    return absl::OkStatus();
  };
  for (size_t at = 0; at < body.size(); at += piece) {
    if (!parser.Feed(body.substr(at, piece), sink).ok()) break;
  }
  (void)parser.Finish();
  if (delivered > body.size()) abort();
  return 0;
}
