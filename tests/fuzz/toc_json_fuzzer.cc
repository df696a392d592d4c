// libFuzzer target: TOC JSON → index, through both formats' entry semantics; and the TOC JSON
// parser against the nlohmann-based one it replaced (tests/format/toc_json_reference.h): any
// difference in verdict, error code or delivered entries is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/toc_json.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "tests/format/toc_json_reference.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using lazypull::format::TocEntry;
using lazypull::format::testing::RefTocEntry;

// One string per entry, so the two parsers' outputs compare whole (`Entry`: the new parser's
// TocEntry, whose strings are views, or the reference's RefTocEntry, whose strings are owned).
template <typename Entry>
std::string Flat(const Entry& e) {
  std::string s;
  for (std::string_view f :
       {std::string_view(e.name), std::string_view(e.type), std::string_view(e.link_name),
        std::string_view(e.modtime), std::string_view(e.user_name), std::string_view(e.group_name),
        std::string_view(e.digest), std::string_view(e.chunk_digest),
        std::string_view(e.chunk_type)}) {
    s.append(f).push_back('\0');
  }
  for (int64_t n : {e.mode, e.size, e.uid, e.gid, e.dev_major, e.dev_minor, e.offset, e.end_offset,
                    e.inner_offset, e.chunk_offset, e.chunk_size}) {
    s += std::to_string(n) + ",";
  }
  for (const auto& [k, v] : e.xattrs) s += k + "=" + v + ";";
  return s;
}

void Differential(std::string_view json) {
  using namespace lazypull::format;
  std::vector<std::string> got, want;
  TocHeader h;
  absl::Status a = ParseTocJson(json, &h, [&got](TocEntry& e) {
    got.push_back(Flat(e));
    return absl::OkStatus();
  });
  testing::RefTocHeader rh;
  absl::Status b = testing::ParseTocJsonReference(json, &rh, [&want](RefTocEntry& e) {
    want.push_back(Flat(e));
    return absl::OkStatus();
  });
  bool same = a.code() == b.code() && got == want &&
              (!a.ok() || (h.version == rh.version && h.tar_split_digest == rh.tar_split_digest));
  if (!same) {
    std::fprintf(stderr, "new: %s\nold: %s\nentries %zu vs %zu\n", a.ToString().c_str(),
                 b.ToString().c_str(), got.size(), want.size());
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lazypull;
  using namespace lazypull::format;
  std::string_view json(reinterpret_cast<const char*>(data), size);
  Differential(json);
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
