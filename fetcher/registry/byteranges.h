// Byte-range protocol pieces of HTTP (RFC 9110 §14): the Range header for several ranges,
// Content-Range values, and a streaming parser of `multipart/byteranges` bodies, which is how
// a server answers a request for more than one range with a single 206 response.
//
// Registries differ: docker-registry (distribution) answers multi-range requests with
// multipart/byteranges; blob stores behind redirects may ignore Range (200 with the whole
// blob) or answer only one range. The range reader (registry_ranges.cc) handles all of them;
// this file only knows the wire format.
#ifndef LAZYPULL_FETCHER_REGISTRY_BYTERANGES_H_
#define LAZYPULL_FETCHER_REGISTRY_BYTERANGES_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "lazypull/blob_reader.h"

namespace lazypull::registry {

// "bytes=a-b,c-d" for non-empty ranges (in the given order).
std::string RangeHeaderValue(std::span<const ByteRange> ranges);

// A parsed `Content-Range: bytes FIRST-LAST/COMPLETE` (COMPLETE may be "*").
struct ContentRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::optional<uint64_t> complete_length;
};
// nullopt if `value` is not of that form, LAST < FIRST, the range is 2^64 bytes long, or
// LAST is not below a given COMPLETE.
std::optional<ContentRange> ParseContentRange(std::string_view value);

// Whether `range` lies inside a blob of `blob_size` bytes (and names that size, if it names
// one). Checked without overflow whatever the numbers a server sent.
bool ContentRangeInside(const ContentRange& range, uint64_t blob_size);

// The boundary of a `multipart/byteranges; boundary=...` Content-Type (quoted or not); nullopt
// for any other media type or a missing/empty boundary.
std::optional<std::string> ByterangesBoundary(std::string_view content_type);

// Parses a multipart/byteranges body fed in arbitrary pieces, calling `on_part_data` with the
// payload bytes of each part and their absolute blob offset (from the part's Content-Range).
// Part payloads are delimited by their Content-Range length, not by searching for the
// boundary, so payload bytes are never copied or scanned. Parts may come in any order.
//
// Not thread-safe; one parser per response.
class ByterangesParser {
 public:
  using PartSink = std::function<absl::Status(uint64_t offset, std::string_view data)>;

  // `blob_size`: a part whose complete length is given must name this size, and every part
  // must lie inside [0, blob_size).
  ByterangesParser(std::string boundary, uint64_t blob_size);

  // Consumes the next body bytes. Errors: DataLoss naming what is malformed (no delimiter
  // where one must be, a bad or missing Content-Range, a part outside the blob, an over-long
  // preamble or header section); the sink's error as is. The epilogue after the close
  // delimiter is ignored, as RFC 2046 says. After an error the parser stays failed.
  absl::Status Feed(std::string_view data, const PartSink& on_part_data);

  // OK once the closing delimiter has been read; DataLoss if the body ended early.
  absl::Status Finish() const;

  // Parts whose headers have been read so far.
  uint64_t parts() const { return parts_; }

 private:
  enum class State { kPreamble, kHeaders, kPayload, kAfterPayload, kDone, kFailed };

  absl::Status Fail(std::string what);
  // Handles one complete line (without CRLF) in kPreamble/kHeaders/kAfterPayload.
  absl::Status OnLine(std::string_view line);

  const std::string delimiter_;  // "--" + boundary
  const uint64_t blob_size_;
  State state_ = State::kPreamble;
  std::string line_;          // partial line being assembled
  size_t section_bytes_ = 0;  // bytes of the current preamble / header section
  std::optional<ContentRange> part_range_;
  uint64_t payload_left_ = 0;
  uint64_t payload_offset_ = 0;
  uint64_t parts_ = 0;
  absl::Status error_;
};

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_BYTERANGES_H_
