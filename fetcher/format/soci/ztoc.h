// Ztoc: the validated content of one SOCI zTOC — the table of contents of an UNMODIFIED gzip
// layer (its tar entries with their uncompressed offsets) plus the gzip checkpoints and
// per-span digests that let a reader inflate any span on its own. Produced by ParseZtoc (from
// untrusted bytes) or BuildZtoc (from a layer), written by SerializeZtoc.
//
// Spans: span i covers compressed bytes [checkpoint(i).resume_offset(), checkpoint(i+1)
// .compressed_offset) — the last span runs to compressed_archive_size — and uncompressed bytes
// [checkpoint(i).uncompressed_offset, checkpoint(i+1).uncompressed_offset) — the last to
// uncompressed_archive_size. span_digests[i] is the sha256 of span i's compressed bytes.
//
// Value type; thread-compatible (immutable use is thread-safe).
#ifndef LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_H_
#define LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fetcher/format/soci/zinfo_checkpoints.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"

namespace lazypull::soci {

// The zTOC version soci writes and reads.
inline constexpr char kZtocVersion[] = "0.9";

// One tar entry as the zTOC records it.
struct ZtocFile {
  std::string name;                  // as written in the tar (not cleaned)
  std::string type;                  // reg|dir|symlink|hardlink|char|block|fifo
  uint64_t uncompressed_offset = 0;  // first payload byte in the uncompressed tar
  uint64_t uncompressed_size = 0;
  std::string linkname;
  int64_t mode = 0;  // the tar mode field (permission and special bits)
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string uname;
  std::string gname;
  int64_t mtime_sec = 0;  // from mod_time (0 when absent or unparsable, as soci reads it)
  uint32_t mtime_nsec = 0;
  int64_t devmajor = 0;
  int64_t devminor = 0;
  // The entry's PAX records, sorted by key. Extended attributes are the keys prefixed
  // "SCHILY.xattr." (see Xattrs()).
  std::vector<std::pair<std::string, std::string>> pax_records;

  // (name, value) of every "SCHILY.xattr.<name>" record, in key order.
  std::vector<std::pair<std::string, std::string>> Xattrs() const;
};

struct Ztoc {
  std::string version = kZtocVersion;
  std::string build_tool_identifier;
  uint64_t compressed_archive_size = 0;
  uint64_t uncompressed_archive_size = 0;
  std::vector<ZtocFile> files;       // sorted by uncompressed_offset, non-overlapping
  std::vector<Digest> span_digests;  // one per checkpoint
  ZinfoCheckpoints checkpoints;

  size_t span_count() const { return checkpoints.size(); }
  // The compressed bytes of span `i` (< span_count()) in the blob.
  ByteRange SpanCompressedRange(size_t i) const;
  // The uncompressed bytes span `i` yields (empty for a last span that starts at or past
  // uncompressed_archive_size).
  ByteRange SpanUncompressedRange(size_t i) const;
  // The span holding uncompressed offset `offset`.
  size_t SpanForUncompressedOffset(uint64_t offset) const {
    return checkpoints.IndexForUncompressedOffset(offset);
  }
};

}  // namespace lazypull::soci

#endif  // LAZYPULL_FETCHER_FORMAT_SOCI_ZTOC_H_
