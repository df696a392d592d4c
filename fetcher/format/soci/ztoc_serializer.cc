#include "fetcher/format/soci/ztoc_serializer.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "fetcher/format/soci/mod_time.h"
#include "fetcher/format/soci/ztoc_generated.h"
#include "flatbuffers/flatbuffers.h"
#include "fmt/format.h"

namespace lazypull::soci {

absl::StatusOr<std::string> SerializeZtoc(const Ztoc& ztoc) {
  if (ztoc.span_digests.size() != ztoc.checkpoints.size() || ztoc.checkpoints.size() == 0) {
    return absl::InvalidArgumentError(fmt::format("ztoc: {} span digests for {} checkpoints",
                                                  ztoc.span_digests.size(),
                                                  ztoc.checkpoints.size()));
  }
  // The checkpoint windows alone make most of the size; refuse early what cannot fit.
  if (ztoc.checkpoints.blob().size() >= FLATBUFFERS_MAX_BUFFER_SIZE / 2) {
    return absl::InvalidArgumentError(
        fmt::format("ztoc: {} bytes of checkpoints exceed the FlatBuffer size limit",
                    ztoc.checkpoints.blob().size()));
  }
  if (ztoc.compressed_archive_size > INT64_MAX || ztoc.uncompressed_archive_size > INT64_MAX) {
    return absl::InvalidArgumentError("ztoc: archive size beyond int64");
  }
  flatbuffers::FlatBufferBuilder b(1 << 16);
  std::vector<flatbuffers::Offset<fb::FileMetadata>> files;
  files.reserve(ztoc.files.size());
  for (const ZtocFile& f : ztoc.files) {
    std::vector<flatbuffers::Offset<fb::Xattr>> records;
    records.reserve(f.pax_records.size());
    for (const auto& [key, value] : f.pax_records) {
      records.push_back(fb::CreateXattr(b, b.CreateString(key), b.CreateString(value)));
    }
    const auto name = b.CreateString(f.name);
    const auto type = b.CreateString(f.type);
    const auto linkname = b.CreateString(f.linkname);
    const auto uname = b.CreateString(f.uname);
    const auto gname = b.CreateString(f.gname);
    const auto mod_time = b.CreateString(FormatModTime({f.mtime_sec, f.mtime_nsec}));
    const auto xattrs = b.CreateVector(records);
    files.push_back(
        fb::CreateFileMetadata(b, name, type, static_cast<int64_t>(f.uncompressed_offset),
                               static_cast<int64_t>(f.uncompressed_size), linkname, f.mode, f.uid,
                               f.gid, uname, gname, mod_time, f.devmajor, f.devminor, xattrs));
  }
  const auto metadata = b.CreateVector(files);
  const auto toc = fb::CreateTOC(b, metadata);

  const std::string& blob = ztoc.checkpoints.blob();
  const auto checkpoints =
      b.CreateVector(reinterpret_cast<const uint8_t*>(blob.data()), blob.size());
  std::vector<flatbuffers::Offset<flatbuffers::String>> digests;
  digests.reserve(ztoc.span_digests.size());
  for (const Digest& d : ztoc.span_digests) digests.push_back(b.CreateString(d.ToString()));
  const auto span_digests = b.CreateVector(digests);
  const auto info = fb::CreateCompressionInfo(b, fb::CompressionAlgorithm_Gzip,
                                              static_cast<int32_t>(ztoc.checkpoints.size() - 1),
                                              span_digests, checkpoints);

  const auto version = b.CreateString(ztoc.version);
  const auto tool = b.CreateString(ztoc.build_tool_identifier);
  b.Finish(fb::CreateZtoc(b, version, tool, static_cast<int64_t>(ztoc.compressed_archive_size),
                          static_cast<int64_t>(ztoc.uncompressed_archive_size), toc, info));
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

}  // namespace lazypull::soci
