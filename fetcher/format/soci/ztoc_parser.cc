#include "fetcher/format/soci/ztoc_parser.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fetcher/format/soci/mod_time.h"
#include "fetcher/format/soci/ztoc_generated.h"
#include "fetcher/format/status_util.h"
#include "flatbuffers/flatbuffers.h"
#include "fmt/format.h"

namespace lazypull::soci {
namespace {

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("ztoc: {}", what));
}

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

bool KnownType(std::string_view t) {
  return t == "reg" || t == "dir" || t == "symlink" || t == "hardlink" || t == "char" ||
         t == "block" || t == "fifo";
}

absl::StatusOr<ZtocFile> ConvertFile(const fb::FileMetadata& m, size_t i,
                                     uint64_t uncompressed_size) {
  ZtocFile f;
  f.name = Str(m.name());
  f.type = Str(m.type());
  if (!KnownType(f.type)) {
    return Invalid(fmt::format("entry {} ({}) has unknown type \"{}\"", i, f.name, f.type));
  }
  if (m.uncompressed_offset() < 0 || m.uncompressed_size() < 0) {
    return Invalid(fmt::format("entry {} ({}) has a negative offset or size", i, f.name));
  }
  f.uncompressed_offset = static_cast<uint64_t>(m.uncompressed_offset());
  f.uncompressed_size = static_cast<uint64_t>(m.uncompressed_size());
  if (f.uncompressed_offset > uncompressed_size ||
      f.uncompressed_size > uncompressed_size - f.uncompressed_offset) {
    return Invalid(fmt::format("entry {} ({}) at [{}, +{}) runs past the archive end {}", i, f.name,
                               f.uncompressed_offset, f.uncompressed_size, uncompressed_size));
  }
  f.linkname = Str(m.linkname());
  f.mode = m.mode();
  f.uid = m.uid();
  f.gid = m.gid();
  f.uname = Str(m.uname());
  f.gname = Str(m.gname());
  f.devmajor = m.devmajor();
  f.devminor = m.devminor();
  if (f.devmajor < 0 || f.devmajor > UINT32_MAX || f.devminor < 0 || f.devminor > UINT32_MAX) {
    return Invalid(
        fmt::format("entry {} ({}) has device numbers {}:{}", i, f.name, f.devmajor, f.devminor));
  }
  // soci ignores an unparsable time (zero time); so do we, as the epoch.
  if (auto t = ParseModTime(Str(m.mod_time())); t.has_value()) {
    f.mtime_sec = t->sec;
    f.mtime_nsec = t->nsec;
  }
  if (const auto* records = m.xattrs(); records != nullptr) {
    f.pax_records.reserve(records->size());
    for (const fb::Xattr* x : *records) {
      if (x == nullptr) return Invalid(fmt::format("entry {} has a null PAX record", i));
      f.pax_records.emplace_back(Str(x->key()), Str(x->value()));
    }
    // Later records win, like a map keyed by name (how soci reads them).
    std::stable_sort(f.pax_records.begin(), f.pax_records.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    auto last = std::unique(f.pax_records.rbegin(), f.pax_records.rend(),
                            [](const auto& a, const auto& b) { return a.first == b.first; });
    f.pax_records.erase(f.pax_records.begin(), last.base());
  }
  return f;
}

}  // namespace

absl::StatusOr<Ztoc> ParseZtoc(std::string_view bytes, const ZtocLimits& limits) {
  if (bytes.size() > limits.max_ztoc_bytes || bytes.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return absl::ResourceExhaustedError(
        fmt::format("ztoc: {} bytes (limit {})", bytes.size(), limits.max_ztoc_bytes));
  }
  // Copy into an aligned buffer: the Verifier checks alignment relative to the buffer start,
  // and a string_view may start anywhere.
  std::string aligned(bytes);
  const auto* data = reinterpret_cast<const uint8_t*>(aligned.data());
  flatbuffers::Verifier::Options vopts;
  vopts.max_depth = 16;
  vopts.max_tables = static_cast<flatbuffers::uoffset_t>(
      std::min<uint64_t>(limits.max_files * 64 + 64, UINT32_MAX - 1));
  flatbuffers::Verifier verifier(data, aligned.size(), vopts);
  if (!fb::VerifyZtocBuffer(verifier)) {
    return Invalid(fmt::format("{} bytes are not a valid zTOC flatbuffer", bytes.size()));
  }
  const fb::Ztoc* root = fb::GetZtoc(data);
  const fb::CompressionInfo* info = root->compression_info();
  if (info == nullptr) return Invalid("no compression_info");
  if (info->compression_algorithm() != fb::CompressionAlgorithm_Gzip) {
    return absl::UnimplementedError(
        fmt::format("ztoc: compression algorithm {} (only gzip is supported)",
                    static_cast<int>(info->compression_algorithm())));
  }
  Ztoc z;
  z.version = Str(root->version());
  z.build_tool_identifier = Str(root->build_tool_identifier());
  if (root->compressed_archive_size() <= 0 || root->uncompressed_archive_size() < 0) {
    return Invalid(fmt::format("archive sizes {} compressed, {} uncompressed",
                               root->compressed_archive_size(), root->uncompressed_archive_size()));
  }
  z.compressed_archive_size = static_cast<uint64_t>(root->compressed_archive_size());
  z.uncompressed_archive_size = static_cast<uint64_t>(root->uncompressed_archive_size());

  // Files.
  const fb::TOC* toc = root->toc();
  const auto* metadata = toc ? toc->metadata() : nullptr;
  const size_t nfiles = metadata ? metadata->size() : 0;
  if (nfiles > limits.max_files) {
    return absl::ResourceExhaustedError(
        fmt::format("ztoc: {} entries (limit {})", nfiles, limits.max_files));
  }
  z.files.reserve(nfiles);
  for (size_t i = 0; i < nfiles; ++i) {
    const fb::FileMetadata* m = metadata->Get(static_cast<flatbuffers::uoffset_t>(i));
    if (m == nullptr) return Invalid(fmt::format("entry {} is null", i));
    auto f = ConvertFile(*m, i, z.uncompressed_archive_size);
    if (!f.ok()) return f.status();
    z.files.push_back(*std::move(f));
  }
  std::stable_sort(z.files.begin(), z.files.end(), [](const ZtocFile& a, const ZtocFile& b) {
    return a.uncompressed_offset < b.uncompressed_offset;
  });
  uint64_t next_header = 0;  // where the next entry's tar header may start
  for (const ZtocFile& f : z.files) {
    // soci's own rule (it derives each entry's header offset from it): a payload never starts
    // before the previous payload's end rounded up to a tar block.
    if (f.uncompressed_offset < next_header) {
      return Invalid(fmt::format("entry {} at {} overlaps the previous entry (ends at {})", f.name,
                                 f.uncompressed_offset, next_header));
    }
    next_header = (f.uncompressed_offset + f.uncompressed_size + 511) / 512 * 512;
  }

  // Checkpoints and spans.
  const auto* blob = info->checkpoints();
  if (blob == nullptr) return Invalid("no checkpoints");
  std::string raw(reinterpret_cast<const char*>(blob->data()), blob->size());
  auto checkpoints = limits.windowless_checkpoints
                         ? ZinfoCheckpoints::ParseWindowless(std::move(raw), limits.max_checkpoints)
                         : ZinfoCheckpoints::Parse(std::move(raw), limits.max_checkpoints);
  if (!checkpoints.ok()) {
    return Invalid(fmt::format("bad checkpoints: {}", format::Msg(checkpoints.status())));
  }
  z.checkpoints = *std::move(checkpoints);
  const size_t spans = z.checkpoints.size();
  if (info->max_span_id() < 0 || static_cast<uint64_t>(info->max_span_id()) + 1 != spans) {
    return Invalid(
        fmt::format("max_span_id {} does not match {} checkpoints", info->max_span_id(), spans));
  }
  const auto* digests = info->span_digests();
  if (digests == nullptr || digests->size() != spans) {
    return Invalid(
        fmt::format("{} span digests for {} spans", digests ? digests->size() : 0, spans));
  }
  z.span_digests.reserve(spans);
  for (size_t i = 0; i < spans; ++i) {
    auto d = Digest::Parse(Str(digests->Get(static_cast<flatbuffers::uoffset_t>(i))));
    if (!d.ok()) return Invalid(fmt::format("span {} digest: {}", i, format::Msg(d.status())));
    z.span_digests.push_back(*std::move(d));
  }
  for (size_t i = 0; i < spans; ++i) {
    const Checkpoint c = z.checkpoints.at(i);
    if (c.compressed_offset >= z.compressed_archive_size) {
      return Invalid(fmt::format("checkpoint {} at compressed offset {} is past the blob end {}", i,
                                 c.compressed_offset, z.compressed_archive_size));
    }
    const ByteRange cr = z.SpanCompressedRange(i);
    const ByteRange ur = z.SpanUncompressedRange(i);
    if (cr.length > limits.max_span_bytes || ur.length > limits.max_span_bytes) {
      return absl::ResourceExhaustedError(
          fmt::format("ztoc: span {} has {} compressed / {} uncompressed bytes (limit {})", i,
                      cr.length, ur.length, limits.max_span_bytes));
    }
  }
  return z;
}

}  // namespace lazypull::soci
