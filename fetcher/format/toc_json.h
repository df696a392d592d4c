// Streaming parser for the TOC JSON shared by eStargz (`stargz.index.json`) and zstd:chunked
// (the manifest): `{"version":1,"entries":[{...},...],...}`.
//
// A hand-written single-pass parser for this one schema: no DOM and no per-field copies, so a
// 200,000-entry TOC costs one entry at a time and strings are views into the input. The whole
// input is still validated as strict RFC 8259 JSON (UTF-8, escapes and surrogate pairs,
// number grammar, nothing after the top-level object), unknown fields included. Stateless;
// thread-safe.
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
//
// The string_view fields point into the parsed JSON, or (for strings with escapes) into
// buffers of the parser: they are valid only during the on_entry call that receives the
// entry. A callback may re-point them (e.g. at another field of the same entry).
struct TocEntry {
  std::string_view name;
  std::string_view type;
  std::string_view link_name;
  std::string_view modtime;
  std::string_view user_name;
  std::string_view group_name;
  std::string_view digest;
  std::string_view chunk_digest;
  std::string_view chunk_type;
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
  std::vector<std::pair<std::string, std::string>> xattrs;  // rare: owned copies

  void Clear();
};

struct TocHeader {
  int64_t version = 0;
  std::string tar_split_digest;  // zstd:chunked only
};

// Parses `json`, calling `on_entry` for each entry in order. An error from `on_entry` stops
// parsing and is returned. InvalidArgument naming the byte position for: malformed JSON, a
// top level that is not an object, "entries" that is not an array of objects, a wrong value
// type for a known field (a string for a number, an integer for a string, an array or object
// for either), negative, too large (> 2^63-1) or non-integral numbers in number fields,
// xattr values that are not strings, or a version other than 1 (0: absent). Null and
// booleans for known fields leave them unset.
absl::Status ParseTocJson(std::string_view json, TocHeader* header,
                          const std::function<absl::Status(TocEntry&)>& on_entry);

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_TOC_JSON_H_
