// The TOC JSON parser lazypull used before its own (nlohmann's SAX interface), kept as the
// reference the new parser (fetcher/format/toc_json.h) is tested and fuzzed against: same
// accepted inputs, same entries, same error codes. Two deliberate differences from the old
// code, both marked "fix": a top-level number or string is rejected (it used to pass as an
// empty TOC), and a float is "not an integer" only as an entry's own number field (it used
// to be checked against the last key seen at any depth, e.g. inside skipped values).
#ifndef LAZYPULL_TESTS_FORMAT_TOC_JSON_REFERENCE_H_
#define LAZYPULL_TESTS_FORMAT_TOC_JSON_REFERENCE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace lazypull::format::testing {

struct RefTocEntry {
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

struct RefTocHeader {
  int64_t version = 0;
  std::string tar_split_digest;
};

absl::Status ParseTocJsonReference(std::string_view json, RefTocHeader* header,
                                   const std::function<absl::Status(RefTocEntry&)>& on_entry);

}  // namespace lazypull::format::testing

#endif  // LAZYPULL_TESTS_FORMAT_TOC_JSON_REFERENCE_H_
