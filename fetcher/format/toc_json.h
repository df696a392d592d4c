// Streaming (SAX) parser for the TOC JSON shared by eStargz (`stargz.index.json`) and
// zstd:chunked (the manifest): `{"version":1,"entries":[{...},...],...}`.
//
// No DOM is built, so a 200,000-entry TOC costs one entry at a time. Unknown fields are
// skipped. Stateless; thread-safe.
#ifndef LAZYPULL_FETCHER_FORMAT_TOC_JSON_H_
#define LAZYPULL_FETCHER_FORMAT_TOC_JSON_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace lazypull::format {

// One TOC entry with the union of both formats' fields. Numbers absent from the JSON are 0,
// strings "". Xattr values are still base64-encoded.
struct TocEntry {
  std::string name;
  std::string type;
  std::string link_name;
  std::string modtime;
  std::string user_name;
  std::string group_name;
  std::string digest;
  std::string chunk_digest;
  std::string chunk_type;
  int64_t mode = 0;
  int64_t size = 0;
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t dev_major = 0;
  int64_t dev_minor = 0;
  int64_t offset = 0;
  int64_t end_offset = 0;
  int64_t inner_offset = 0;
  int64_t chunk_offset = 0;
  int64_t chunk_size = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;

  void Clear();
};

struct TocHeader {
  int64_t version = 0;
  std::string tar_split_digest;  // zstd:chunked only
};

// Parses `json`, calling `on_entry` for each entry in order (the entry may be moved from). An
// error from `on_entry` stops parsing and is returned. Malformed JSON, a wrong value type for
// a known field, negative or non-integral numbers, or a version other than 1 are
// InvalidArgument naming the byte position.
absl::Status ParseTocJson(std::string_view json, TocHeader* header,
                          const std::function<absl::Status(TocEntry&)>& on_entry);

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_TOC_JSON_H_
