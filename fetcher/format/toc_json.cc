#include "fetcher/format/toc_json.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "fmt/format.h"

namespace lazypull::format {

void TocEntry::Clear() {
  name = type = link_name = modtime = user_name = group_name = {};
  digest = chunk_digest = chunk_type = {};
  mode = size = uid = gid = dev_major = dev_minor = 0;
  offset = end_offset = inner_offset = chunk_offset = chunk_size = 0;
  xattrs.clear();
}

namespace {

enum class FieldKind : uint8_t { kNone, kString, kNumber, kXattrs };

struct Field {
  FieldKind kind = FieldKind::kNone;
  std::string_view TocEntry::*str = nullptr;
  int64_t TocEntry::*num = nullptr;
  int buffer = 0;  // which unescape buffer a string field uses
};

constexpr int kStringFields = 9;

Field Str(std::string_view TocEntry::*m, int buffer) {
  return {FieldKind::kString, m, nullptr, buffer};
}
Field Num(int64_t TocEntry::*m) { return {FieldKind::kNumber, nullptr, m, 0}; }

// The known entry fields of both formats.
Field LookupField(std::string_view k) {
  switch (k.size()) {
    case 3:
      if (k == "uid") return Num(&TocEntry::uid);
      if (k == "gid") return Num(&TocEntry::gid);
      break;
    case 4:
      if (k == "name") return Str(&TocEntry::name, 0);
      if (k == "type") return Str(&TocEntry::type, 1);
      if (k == "size") return Num(&TocEntry::size);
      if (k == "mode") return Num(&TocEntry::mode);
      break;
    case 6:
      if (k == "offset") return Num(&TocEntry::offset);
      if (k == "digest") return Str(&TocEntry::digest, 6);
      if (k == "xattrs") return {FieldKind::kXattrs};
      break;
    case 7:
      if (k == "modtime") return Str(&TocEntry::modtime, 3);
      break;
    case 8:
      if (k == "linkName") return Str(&TocEntry::link_name, 2);
      if (k == "userName") return Str(&TocEntry::user_name, 4);
      if (k == "devMajor") return Num(&TocEntry::dev_major);
      if (k == "devMinor") return Num(&TocEntry::dev_minor);
      break;
    case 9:
      if (k == "groupName") return Str(&TocEntry::group_name, 5);
      if (k == "chunkType") return Str(&TocEntry::chunk_type, 8);
      if (k == "endOffset") return Num(&TocEntry::end_offset);
      if (k == "chunkSize") return Num(&TocEntry::chunk_size);
      break;
    case 11:
      if (k == "chunkDigest") return Str(&TocEntry::chunk_digest, 7);
      if (k == "innerOffset") return Num(&TocEntry::inner_offset);
      if (k == "chunkOffset") return Num(&TocEntry::chunk_offset);
      break;
    default:
      break;
  }
  return {};
}

// Bytes that may appear unescaped in a JSON string without further checks.
struct PlainTable {
  bool plain[256] = {};
  constexpr PlainTable() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  }
};
constexpr PlainTable kPlain;

constexpr uint64_t kOnes = 0x0101010101010101ull;
constexpr uint64_t kHighs = 0x8080808080808080ull;

// Whether any of the 8 bytes of `v` needs a look: '"', '\\', a control byte or a non-ASCII
// byte. May not say which (bits above the first hit are unreliable), only whether.
inline bool NeedsLook(uint64_t v) {
  auto has_zero = [](uint64_t x) { return (x - kOnes) & ~x & kHighs; };
  return (has_zero(v ^ (kOnes * '"')) | has_zero(v ^ (kOnes * '\\')) |
          ((v - kOnes * 0x20) & ~v & kHighs) | (v & kHighs)) != 0;
}

enum class NumKind : uint8_t { kInt, kNegative, kTooLarge, kFloat };

struct Number {
  NumKind kind = NumKind::kInt;
  int64_t value = 0;
};

class TocParser {
 public:
  TocParser(std::string_view text, TocHeader* header,
            const std::function<absl::Status(TocEntry&)>& on_entry)
      : begin_(text.data()),
        p_(text.data()),
        end_(text.data() + text.size()),
        header_(header),
        on_entry_(on_entry) {}

  absl::Status Run() {
    if (ParseDocument()) return absl::OkStatus();
    return status_;
  }

 private:
  size_t Pos() const { return static_cast<size_t>(p_ - begin_); }
  int Peek() const { return p_ < end_ ? static_cast<unsigned char>(*p_) : -1; }

  bool Syntax(std::string_view what) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          fmt::format("TOC is not valid JSON at byte {}: {}", Pos(), what));
    }
    return false;
  }
  bool Fail(std::string_view what) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          fmt::format("TOC entry {}: {} (at byte {})", count_, what, Pos()));
    }
    return false;
  }
  bool Unexpected() {
    if (p_ >= end_) return Syntax("unexpected end of input");
    unsigned char c = static_cast<unsigned char>(*p_);
    if (c >= 0x20 && c < 0x7f) return Syntax(fmt::format("unexpected '{}'", static_cast<char>(c)));
    return Syntax(fmt::format("unexpected byte 0x{:02x}", c));
  }

  void SkipWs() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool Expect(char c) {
    SkipWs();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      SkipWs();
      return true;
    }
    return Unexpected();
  }
  static bool StartsValue(int c) {
    return c == '{' || c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't' ||
           c == 'f' || c == 'n';
  }

  bool ParseDocument() {
    if (Peek() == 0xef) {
      if (end_ - p_ < 3 || static_cast<unsigned char>(p_[1]) != 0xbb ||
          static_cast<unsigned char>(p_[2]) != 0xbf) {
        return Syntax("invalid byte order mark");
      }
      p_ += 3;
    }
    SkipWs();
    if (Peek() != '{') {
      if (StartsValue(Peek())) return Fail("the TOC is not a JSON object");
      return Unexpected();
    }
    if (!ParseTopObject()) return false;
    SkipWs();
    // A NUL byte ends the input, as it did for nlohmann's lexer (a writer's padding).
    if (p_ != end_ && *p_ != '\0') return Syntax("content after the TOC object");
    if (header_->version != 0 && header_->version != 1) {
      status_ = absl::InvalidArgumentError(
          fmt::format("unsupported TOC version {} (want 1)", header_->version));
      return false;
    }
    return true;
  }

  // Calls `member(key)` for each member of the object at p_ ('{'), with p_ at the value.
  template <typename F>
  bool ParseObject(std::string* key_buffer, F&& member) {
    ++p_;
    SkipWs();
    if (Peek() == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (Peek() != '"') return Unexpected();
      std::string_view key;
      if (!ParseString(&key, key_buffer) || !Expect(':')) return false;
      if (!member(key)) return false;
      SkipWs();
      int c = Peek();
      ++p_;
      if (c == ',') {
        SkipWs();
        continue;
      }
      if (c == '}') return true;
      --p_;
      return Unexpected();
    }
  }

  bool ParseTopObject() {
    return ParseObject(&key_buffer_, [this](std::string_view key) {
      int c = Peek();
      if (key == "version") {
        if (c == '"') {
          std::string_view ignored;
          return ParseString(&ignored, &value_buffer_) && Fail("\"version\" is not a number");
        }
        if (c != '-' && !(c >= '0' && c <= '9')) return SkipValue();
        Number n;
        if (!ParseNumber(&n)) return false;
        if (n.kind == NumKind::kNegative || n.kind == NumKind::kTooLarge) {
          return Fail("bad TOC version");
        }
        if (n.kind == NumKind::kInt) header_->version = n.value;
        return true;
      }
      if (key == "entries") {
        if (c != '[') return StartsValue(c) ? Fail("\"entries\" is not an array") : Unexpected();
        return ParseEntries();
      }
      if (key == "tarSplitDigest" && c == '"') {
        std::string_view v;
        if (!ParseString(&v, &value_buffer_)) return false;
        header_->tar_split_digest.assign(v);
        return true;
      }
      return SkipValue();
    });
  }

  bool ParseEntries() {
    ++p_;
    SkipWs();
    if (Peek() == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      int c = Peek();
      if (c == '{') {
        if (!ParseEntry()) return false;
      } else if (c == '[') {
        if (!SkipValue()) return false;  // as before: nested arrays in "entries" are ignored
      } else {
        return StartsValue(c) ? Fail("an entry is not a JSON object") : Unexpected();
      }
      SkipWs();
      c = Peek();
      ++p_;
      if (c == ',') {
        SkipWs();
        continue;
      }
      if (c == ']') return true;
      --p_;
      return Unexpected();
    }
  }

  bool ParseEntry() {
    entry_.Clear();
    bool ok = ParseObject(&key_buffer_, [this](std::string_view key) {
      Field f = LookupField(key);
      int c = Peek();
      switch (f.kind) {
        case FieldKind::kNone:
          return SkipValue();
        case FieldKind::kXattrs:
          if (c == '{') return ParseXattrs();
          if (c == '[') return WrongType(key);
          return SkipValue();
        case FieldKind::kString:
          if (c == '"') return ParseString(&(entry_.*f.str), &string_buffers_[f.buffer]);
          if (c == '{' || c == '[') return WrongType(key);
          if (c == '-' || (c >= '0' && c <= '9')) {
            Number n;
            if (!ParseNumber(&n)) return false;
            // A float here is ignored, as nlohmann's SAX interface let it be.
            if (n.kind != NumKind::kFloat) {
              return Fail(fmt::format("field \"{}\" is not a string", key));
            }
            return true;
          }
          return SkipValue();  // null, true, false (or a syntax error)
        case FieldKind::kNumber:
          if (c == '-' || (c >= '0' && c <= '9')) {
            Number n;
            if (!ParseNumber(&n)) return false;
            if (n.kind == NumKind::kFloat) {
              return Fail(fmt::format("field \"{}\" is not an integer", key));
            }
            if (n.kind != NumKind::kInt) {
              return Fail(fmt::format("field \"{}\" is negative or too large", key));
            }
            entry_.*f.num = n.value;
            return true;
          }
          if (c == '"') {
            std::string_view ignored;
            return ParseString(&ignored, &value_buffer_) &&
                   Fail(fmt::format("field \"{}\" is not a number", key));
          }
          if (c == '{' || c == '[') return WrongType(key);
          return SkipValue();
      }
      return false;
    });
    if (!ok) return false;
    if (++count_ == 0) return Fail("entry counter overflow");
    absl::Status st = on_entry_(entry_);
    if (!st.ok()) {
      status_ = std::move(st);
      return false;
    }
    return true;
  }

  bool WrongType(std::string_view key) {
    return Fail(fmt::format("field \"{}\" has the wrong type", key));
  }

  bool ParseXattrs() {
    return ParseObject(&xattr_key_buffer_, [this](std::string_view key) {
      int c = Peek();
      if (c == '"') {
        std::string_view v;
        if (!ParseString(&v, &value_buffer_)) return false;
        entry_.xattrs.emplace_back(key, v);
        return true;
      }
      if (c == '{' || c == '[') return SkipValue();  // as before: ignored
      if (!StartsValue(c)) return Unexpected();
      return Fail(fmt::format("xattr \"{}\" value is not a string", key));
    });
  }

  // Validates and skips one value of any type, without recursion (no depth limit).
  bool SkipValue() {
    std::string& stack = skip_stack_;
    stack.clear();
    std::string_view ignored;
    for (;;) {
      // p_ is at a value.
      int c = Peek();
      bool opened = false;
      if (c == '{' || c == '[') {
        ++p_;
        SkipWs();
        if (Peek() == (c == '{' ? '}' : ']')) {
          ++p_;
        } else {
          stack.push_back(static_cast<char>(c));
          opened = true;
        }
      } else if (c == '"') {
        if (!ParseString(&ignored, &value_buffer_)) return false;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        Number n;
        if (!ParseNumber(&n)) return false;
      } else if (c == 't' || c == 'f' || c == 'n') {
        if (!ParseLiteral()) return false;
      } else {
        return Unexpected();
      }
      if (!opened) {
        // After a value: close containers until one continues with ','.
        for (;;) {
          if (stack.empty()) return true;
          SkipWs();
          int d = Peek();
          if (d == ',') {
            ++p_;
            SkipWs();
            break;
          }
          if (d != (stack.back() == '{' ? '}' : ']')) return Unexpected();
          ++p_;
          stack.pop_back();
        }
      }
      if (stack.back() == '{') {
        if (Peek() != '"') return Unexpected();
        if (!ParseString(&ignored, &value_buffer_) || !Expect(':')) return false;
      }
    }
  }

  bool ParseLiteral() {
    for (std::string_view lit : {"true", "false", "null"}) {
      if (static_cast<size_t>(end_ - p_) >= lit.size() &&
          std::memcmp(p_, lit.data(), lit.size()) == 0) {
        p_ += lit.size();
        return true;
      }
    }
    return Syntax("invalid literal");
  }

  // RFC 8259 number. Integers that fit uint64 (or, negative, int64) are integers, like
  // nlohmann's; everything else (fraction, exponent, overflow) is a float. "-0" is 0.
  bool ParseNumber(Number* n) {
    const char* start = p_;
    bool negative = false;
    if (*p_ == '-') {
      negative = true;
      ++p_;
    }
    int c = Peek();
    if (!(c >= '0' && c <= '9')) return Syntax("invalid number");
    uint64_t mag = 0;
    bool overflow = false;
    if (c == '0') {
      ++p_;
    } else {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
        uint64_t d = static_cast<uint64_t>(*p_ - '0');
        if (mag > (std::numeric_limits<uint64_t>::max() - d) / 10) overflow = true;
        mag = mag * 10 + d;
        ++p_;
      }
    }
    bool is_float = overflow;
    if (Peek() == '.') {
      ++p_;
      if (!(Peek() >= '0' && Peek() <= '9')) return Syntax("invalid number: digit after '.'");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      is_float = true;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++p_;
      if (Peek() == '+' || Peek() == '-') ++p_;
      if (!(Peek() >= '0' && Peek() <= '9')) return Syntax("invalid number: exponent digits");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      is_float = true;
    }
    constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (is_float || (negative && mag > kMax + 1)) {
      n->kind = NumKind::kFloat;
      // Like nlohmann: a float that overflows a double is an error (rare: no TOC field is a
      // float, so the conversion costs nothing in practice).
      if (std::isinf(std::strtod(std::string(start, p_).c_str(), nullptr))) {
        return Syntax("number overflow");
      }
    } else if (negative && mag != 0) {
      n->kind = NumKind::kNegative;
    } else if (mag > kMax) {
      n->kind = NumKind::kTooLarge;
    } else {
      n->kind = NumKind::kInt;
      n->value = static_cast<int64_t>(mag);
    }
    return true;
  }

  // p_ at '"'. `out` views the input when the string has no escapes, else `buffer`.
  bool ParseString(std::string_view* out, std::string* buffer) {
    const char* start = ++p_;
    for (;;) {
      while (end_ - p_ >= 8) {
        uint64_t v;
        std::memcpy(&v, p_, 8);
        if (NeedsLook(v)) break;
        p_ += 8;
      }
      while (p_ < end_ && kPlain.plain[static_cast<unsigned char>(*p_)]) ++p_;
      if (p_ >= end_) return Syntax("unterminated string");
      unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        *out = std::string_view(start, static_cast<size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c == '\\') break;
      if (c < 0x20) return Syntax("control character in a string must be escaped");
      if (c >= 0x80 && !SkipUtf8()) return false;
    }
    // Escapes: decode into `buffer`.
    buffer->assign(start, p_);
    for (;;) {
      const char* run = p_;
      while (p_ < end_ && kPlain.plain[static_cast<unsigned char>(*p_)]) ++p_;
      buffer->append(run, p_);
      if (p_ >= end_) return Syntax("unterminated string");
      unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        *out = *buffer;
        return true;
      }
      if (c < 0x20) return Syntax("control character in a string must be escaped");
      if (c >= 0x80) {
        const char* seq = p_;
        if (!SkipUtf8()) return false;
        buffer->append(seq, p_);
        continue;
      }
      if (!DecodeEscape(buffer)) return false;
    }
  }

  // p_ at a byte >= 0x80: checks one well-formed UTF-8 sequence (Unicode table 3-7).
  bool SkipUtf8() {
    auto byte = [this](ptrdiff_t i) { return static_cast<unsigned char>(p_[i]); };
    unsigned char c = byte(0);
    int n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return Syntax("invalid UTF-8 in a string");
    }
    if (end_ - p_ <= n) return Syntax("invalid UTF-8 in a string");
    if (byte(1) < lo || byte(1) > hi) return Syntax("invalid UTF-8 in a string");
    for (int i = 2; i <= n; ++i) {
      if (byte(i) < 0x80 || byte(i) > 0xbf) return Syntax("invalid UTF-8 in a string");
    }
    p_ += n + 1;
    return true;
  }

  bool Hex4(uint32_t* out) {
    if (end_ - p_ < 4) return Syntax("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = p_[i];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Syntax("\\u must be followed by 4 hex digits");
      }
      v = v << 4 | d;
    }
    p_ += 4;
    *out = v;
    return true;
  }

  // p_ at '\\'.
  bool DecodeEscape(std::string* out) {
    ++p_;
    if (p_ >= end_) return Syntax("unterminated string");
    char e = *p_++;
    switch (e) {
      case '"':
      case '\\':
      case '/':
        out->push_back(e);
        return true;
      case 'b':
        out->push_back('\b');
        return true;
      case 'f':
        out->push_back('\f');
        return true;
      case 'n':
        out->push_back('\n');
        return true;
      case 'r':
        out->push_back('\r');
        return true;
      case 't':
        out->push_back('\t');
        return true;
      case 'u':
        break;
      default:
        --p_;
        return Syntax("invalid escape in a string");
    }
    uint32_t cp;
    if (!Hex4(&cp)) return false;
    if (cp >= 0xdc00 && cp <= 0xdfff) return Syntax("lone low surrogate in a \\u escape");
    if (cp >= 0xd800 && cp <= 0xdbff) {
      uint32_t low;
      if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
        return Syntax("high surrogate not followed by a \\u low surrogate");
      }
      p_ += 2;
      if (!Hex4(&low)) return false;
      if (low < 0xdc00 || low > 0xdfff) return Syntax("high surrogate without a low surrogate");
      cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | cp >> 6));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | cp >> 12));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | cp >> 18));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
    return true;
  }

  const char* const begin_;
  const char* p_;
  const char* const end_;
  TocHeader* header_;
  const std::function<absl::Status(TocEntry&)>& on_entry_;
  absl::Status status_;
  TocEntry entry_;
  uint64_t count_ = 0;
  std::string string_buffers_[kStringFields];
  std::string key_buffer_;
  std::string xattr_key_buffer_;
  std::string value_buffer_;
  std::string skip_stack_;
};

}  // namespace

absl::Status ParseTocJson(std::string_view text, TocHeader* header,
                          const std::function<absl::Status(TocEntry&)>& on_entry) {
  TocHeader local;
  if (header == nullptr) header = &local;
  return TocParser(text, header, on_entry).Run();
}

}  // namespace lazypull::format
