#include "tests/format/soci_test_util.h"

#include "absl/status/status.h"
#include "fetcher/format/soci/span_inflater.h"
#include "fetcher/format/soci/span_slices.h"
#include "fmt/format.h"
#include "tests/harness/subprocess.h"

namespace lazypull::soci::testing {

absl::StatusOr<SampleLayer> MakeSampleLayer(const lazypull::testing::TempDir& dir) {
  SampleLayer s;
  s.src_dir = dir.Sub("src");
  const std::string long_dir(120, 'd');
  const std::string script = fmt::format(
      "set -e; src={0}; mkdir -p $src/inc $src/bin $src/{1}; "
      "cp -r /usr/include/flatbuffers /usr/include/absl/strings /usr/include/zlib.h $src/inc/; "
      "cp /usr/bin/flatc $src/bin/flatc; ln -s ../inc/zlib.h $src/bin/zlib-link; "
      "ln $src/inc/zlib.h $src/bin/zlib-hard; : > $src/empty; echo long > $src/{1}/file; "
      "(setfattr -n user.soci -v yes $src/empty 2>/dev/null || true); "
      "tar --format=pax --xattrs --sort=name -C $src -cf {2} .; "
      "gzip -9 -c < {2} > {3}; cp {2} {4}; gzip -f {4}",
      s.src_dir, long_dir, dir.Sub("layer.tar"), dir.Sub("layer.tar.gz"), dir.Sub("named.tar"));
  auto r = lazypull::testing::RunShell(script);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(fmt::format("making the sample layer failed: {}", r->output));
  }
  for (auto [path, dst] :
       {std::pair{dir.Sub("layer.tar"), &s.tar}, std::pair{dir.Sub("layer.tar.gz"), &s.gzip},
        std::pair{dir.Sub("named.tar.gz"), &s.gzip_named}}) {
    auto bytes = lazypull::testing::ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    *dst = *std::move(bytes);
  }
  return s;
}

absl::StatusOr<std::string> ReadSpan(const Ztoc& ztoc, std::string_view blob, size_t i) {
  const ByteRange cr = ztoc.SpanCompressedRange(i);
  if (cr.end() > blob.size()) return absl::OutOfRangeError("span past the blob end");
  const std::string_view bytes = blob.substr(cr.offset, cr.length);
  if (auto st = ztoc.span_digests[i].Verify(bytes); !st.ok()) return st;
  SpanInflateOptions options;
  options.expect_block_end = i + 1 < ztoc.span_count();
  return InflateSpan(ztoc.checkpoints.at(i), bytes, ztoc.SpanUncompressedRange(i).length, options);
}

absl::StatusOr<std::string> ReadUncompressed(const Ztoc& ztoc, std::string_view blob,
                                             uint64_t offset, uint64_t length) {
  std::string out;
  if (length == 0) return out;
  const std::vector<SpanSlice> slices = SlicesForRange(ztoc, offset, length);
  if (slices.empty()) return absl::OutOfRangeError("range outside the archive");
  for (const SpanSlice& s : slices) {
    if (s.range_offset != out.size()) return absl::InternalError("slices do not tile");
    auto span = ReadSpan(ztoc, blob, s.span);
    if (!span.ok()) return span.status();
    out.append(*span, s.span_offset, s.length);
  }
  if (out.size() != length) {
    return absl::OutOfRangeError(fmt::format("read {} of {} bytes", out.size(), length));
  }
  return out;
}

}  // namespace lazypull::soci::testing
