#include "tests/format/soci_test_util.h"

#include "absl/status/status.h"
#include "fetcher/format/soci/span_inflater.h"
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
  for (size_t i = ztoc.SpanForUncompressedOffset(offset); i < ztoc.span_count(); ++i) {
    const ByteRange ur = ztoc.SpanUncompressedRange(i);
    if (ur.offset >= offset + length) break;
    auto span = ReadSpan(ztoc, blob, i);
    if (!span.ok()) return span.status();
    const uint64_t from = std::max(offset, ur.offset);
    const uint64_t to = std::min(offset + length, ur.end());
    if (from < to) out.append(*span, from - ur.offset, to - from);
  }
  if (out.size() != length) {
    return absl::OutOfRangeError(fmt::format("read {} of {} bytes", out.size(), length));
  }
  return out;
}

}  // namespace lazypull::soci::testing
