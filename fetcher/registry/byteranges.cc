#include "fetcher/registry/byteranges.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "fmt/format.h"

namespace lazypull::registry {
namespace {

// Longest preamble or header section accepted: parts' headers are a few short lines.
constexpr size_t kMaxHeaderBytes = 16 << 10;

std::string_view TrimTrailingSpace(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  s = Trim(s);
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

// A server's text quoted in an error message: at most 80 bytes, non-printables escaped.
std::string Quote(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) {
    if (std::isprint(static_cast<unsigned char>(c))) {
      out.push_back(c);
    } else {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

}  // namespace

std::string RangeHeaderValue(std::span<const ByteRange> ranges) {
  std::string out = "bytes=";
  bool first = true;
  for (const ByteRange& r : ranges) {
    if (r.length == 0) continue;
    if (!first) out.push_back(',');
    first = false;
    out += fmt::format("{}-{}", r.offset, r.end() - 1);
  }
  return out;
}

std::optional<ContentRange> ParseContentRange(std::string_view value) {
  value = Trim(value);
  if (value.size() < 6 || !EqualsIgnoreCase(value.substr(0, 6), "bytes ")) return std::nullopt;
  value.remove_prefix(6);
  value = Trim(value);
  size_t dash = value.find('-');
  size_t slash = value.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  uint64_t first = 0, last = 0;
  if (!ParseU64(value.substr(0, dash), &first) ||
      !ParseU64(value.substr(dash + 1, slash - dash - 1), &last) || last < first) {
    return std::nullopt;
  }
  // 0-18446744073709551615 is 2^64 bytes: its length does not fit (it would wrap to 0).
  if (last - first == UINT64_MAX) return std::nullopt;
  ContentRange out{first, last - first + 1, std::nullopt};
  std::string_view complete = value.substr(slash + 1);
  if (complete != "*") {
    uint64_t n = 0;
    // RFC 9110 §14.4: LAST must be below the complete length.
    if (!ParseU64(complete, &n) || last >= n) return std::nullopt;
    out.complete_length = n;
  }
  return out;
}

bool ContentRangeInside(const ContentRange& range, uint64_t blob_size) {
  if (range.complete_length.has_value() && *range.complete_length != blob_size) return false;
  return range.offset <= blob_size && range.length <= blob_size - range.offset;
}

std::optional<std::string> ByterangesBoundary(std::string_view content_type) {
  size_t semi = content_type.find(';');
  std::string_view type = Trim(content_type.substr(0, semi));
  if (!EqualsIgnoreCase(type, "multipart/byteranges") || semi == std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view params = content_type.substr(semi + 1);
  while (!params.empty()) {
    size_t next = params.find(';');
    std::string_view param = Trim(params.substr(0, next));
    params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
    size_t eq = param.find('=');
    if (eq == std::string_view::npos) continue;
    if (!EqualsIgnoreCase(Trim(param.substr(0, eq)), "boundary")) {
      continue;
    }
    std::string_view b = Trim(param.substr(eq + 1));
    if (b.size() >= 2 && b.front() == '"' && b.back() == '"') b = b.substr(1, b.size() - 2);
    // RFC 2046: 1 to 70 characters.
    if (b.empty() || b.size() > 70) return std::nullopt;
    return std::string(b);
  }
  return std::nullopt;
}

ByterangesParser::ByterangesParser(std::string boundary, uint64_t blob_size)
    : delimiter_("--" + boundary), blob_size_(blob_size) {}

absl::Status ByterangesParser::Fail(std::string what) {
  state_ = State::kFailed;
  error_ = absl::DataLossError("malformed multipart/byteranges response: " + what);
  return error_;
}

absl::Status ByterangesParser::OnLine(std::string_view line) {
  switch (state_) {
    case State::kPreamble:
    case State::kAfterPayload: {
      std::string_view l = TrimTrailingSpace(line);
      if (l.empty()) return absl::OkStatus();  // the CRLF that opens the delimiter
      if (l == delimiter_) {
        state_ = State::kHeaders;
        part_range_.reset();
        return absl::OkStatus();
      }
      if (l == delimiter_ + "--") {
        state_ = State::kDone;
        return absl::OkStatus();
      }
      if (state_ == State::kAfterPayload) {
        return Fail(
            fmt::format("expected the boundary after part {}, got \"{}\"", parts_, Quote(l)));
      }
      return absl::OkStatus();  // preamble text is ignored
    }
    case State::kHeaders: {
      if (line.empty()) {
        if (!part_range_) return Fail(fmt::format("part {} has no Content-Range", parts_ + 1));
        ++parts_;
        payload_offset_ = part_range_->offset;
        payload_left_ = part_range_->length;
        section_bytes_ = 0;
        state_ = payload_left_ == 0 ? State::kAfterPayload : State::kPayload;
        return absl::OkStatus();
      }
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) {
        return Fail(fmt::format("bad header line \"{}\" in part {}", Quote(line), parts_ + 1));
      }
      if (!EqualsIgnoreCase(Trim(line.substr(0, colon)), "content-range")) {
        return absl::OkStatus();
      }
      std::string_view value = line.substr(colon + 1);
      std::optional<ContentRange> cr = ParseContentRange(value);
      if (!cr) {
        return Fail(fmt::format("bad Content-Range \"{}\" in part {}", Quote(value), parts_ + 1));
      }
      if (!ContentRangeInside(*cr, blob_size_) || cr->offset >= blob_size_) {
        return Fail(fmt::format("part {} Content-Range \"{}\" is outside the blob of {} bytes",
                                parts_ + 1, Quote(value), blob_size_));
      }
      part_range_ = cr;
      return absl::OkStatus();
    }
    default:
      return absl::OkStatus();
  }
}

absl::Status ByterangesParser::Feed(std::string_view data, const PartSink& on_part_data) {
  while (!data.empty()) {
    switch (state_) {
      case State::kFailed:
        return error_;
      case State::kDone:
        return absl::OkStatus();  // epilogue
      case State::kPayload: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(payload_left_, data.size()));
        if (absl::Status st = on_part_data(payload_offset_, data.substr(0, n)); !st.ok()) {
          state_ = State::kFailed;
          error_ = st;
          return st;
        }
        payload_offset_ += n;
        payload_left_ -= n;
        data.remove_prefix(n);
        if (payload_left_ == 0) state_ = State::kAfterPayload;
        break;
      }
      default: {
        size_t nl = data.find('\n');
        size_t take = nl == std::string_view::npos ? data.size() : nl + 1;
        section_bytes_ += take;
        if (section_bytes_ > kMaxHeaderBytes) {
          return Fail(state_ == State::kPreamble ? "no boundary in the first 16 KiB"
                                                 : "part headers longer than 16 KiB");
        }
        line_.append(data.substr(0, take));
        data.remove_prefix(take);
        if (nl == std::string_view::npos) {
          // After a payload only a delimiter may follow: catch garbage without waiting for a
          // line end that may never come.
          if (state_ == State::kAfterPayload) {
            std::string_view l = line_;
            if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
            size_t n = std::min(l.size(), delimiter_.size());
            if (l.substr(0, n) != std::string_view(delimiter_).substr(0, n)) {
              return Fail(
                  fmt::format("expected the boundary after part {}, got \"{}\"", parts_, Quote(l)));
            }
          }
          break;
        }
        std::string line = std::move(line_);
        line_.clear();
        line.pop_back();  // '\n'
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (absl::Status st = OnLine(line); !st.ok()) return st;
      }
    }
  }
  return state_ == State::kFailed ? error_ : absl::OkStatus();
}

absl::Status ByterangesParser::Finish() const {
  if (state_ == State::kFailed) return error_;
  if (state_ != State::kDone) {
    return absl::DataLossError(fmt::format(
        "malformed multipart/byteranges response: body ended before the close delimiter "
        "(after {} part(s){})",
        parts_, state_ == State::kPayload ? fmt::format(", {} bytes short", payload_left_) : ""));
  }
  return absl::OkStatus();
}

}  // namespace lazypull::registry
