#include "server/filters.h"

#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lazypull {

struct SnapshotFilter::Selector {
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  std::vector<std::string> fieldpath;
  Op op = Op::kPresent;
  std::string value;
  std::optional<std::regex> re;
};

namespace {

using Selector = SnapshotFilter::Selector;

bool IsFieldChar(char c) {
  return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool IsQuote(char c) { return c == '"' || c == '/' || c == '|'; }

// Recursive-descent parser over one filter string.
class Parser {
 public:
  explicit Parser(absl::string_view input) : in_(input) {}

  absl::StatusOr<std::vector<std::shared_ptr<const Selector>>> Parse() {
    std::vector<std::shared_ptr<const Selector>> all;
    while (true) {
      absl::StatusOr<std::shared_ptr<const Selector>> sel = ParseSelector();
      if (!sel.ok()) return sel.status();
      all.push_back(std::move(*sel));
      SkipSpace();
      if (pos_ >= in_.size()) break;
      if (in_[pos_] != ',') return Error("unexpected input");
      ++pos_;
    }
    return all;
  }

 private:
  absl::Status Error(absl::string_view msg) const {
    return absl::InvalidArgumentError(
        absl::StrCat("parse error in filter [", in_, "] at ", pos_, ": ", msg));
  }
  void SkipSpace() {
    while (pos_ < in_.size() && IsSpace(in_[pos_])) ++pos_;
  }

  // Go-style quoted string with the given quote character; handles the common escapes.
  absl::StatusOr<std::string> ParseQuoted(bool allow_alt_quotes) {
    char quote = in_[pos_];
    if (!allow_alt_quotes && quote != '"') return Error("invalid quote encountered");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= in_.size() || in_[pos_] == '\n') return Error("quoted literal not terminated");
      char c = in_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= in_.size()) return Error("quoted literal not terminated");
      char e = in_[pos_++];
      switch (e) {
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case '\\':
          out.push_back('\\');
          break;
        default:
          if (e == quote) {
            // For regex quotes Go keeps the escaped delimiter; for '"' it unescapes.
            out.push_back(e);
          } else {
            return Error("illegal escape sequence");
          }
      }
    }
    return out;
  }

  absl::StatusOr<std::string> ParseField() {
    SkipSpace();
    if (pos_ >= in_.size()) return Error("expected field or quoted");
    if (IsQuote(in_[pos_])) return ParseQuoted(/*allow_alt_quotes=*/false);
    size_t start = pos_;
    while (pos_ < in_.size() && IsFieldChar(in_[pos_])) ++pos_;
    if (pos_ == start) return Error("expected field or quoted");
    return std::string(in_.substr(start, pos_ - start));
  }

  absl::StatusOr<std::shared_ptr<const Selector>> ParseSelector() {
    auto sel = std::make_shared<Selector>();
    while (true) {
      absl::StatusOr<std::string> field = ParseField();
      if (!field.ok()) return field.status();
      sel->fieldpath.push_back(std::move(*field));
      SkipSpace();
      if (pos_ < in_.size() && in_[pos_] == '.') {
        ++pos_;
        continue;
      }
      break;
    }
    if (pos_ >= in_.size() || in_[pos_] == ',') return sel;  // presence
    size_t op_start = pos_;
    while (pos_ < in_.size() && (in_[pos_] == '=' || in_[pos_] == '!' || in_[pos_] == '~')) {
      ++pos_;
    }
    absl::string_view op = in_.substr(op_start, pos_ - op_start);
    if (op == "==") {
      sel->op = Selector::Op::kEqual;
    } else if (op == "!=") {
      sel->op = Selector::Op::kNotEqual;
    } else if (op == "~=") {
      sel->op = Selector::Op::kMatches;
    } else if (op.empty()) {
      return Error(R"(expected an operator ("=="|"!="|"~="))");
    } else {
      return Error(absl::StrCat("unsupported operator ", op));
    }
    SkipSpace();
    if (pos_ >= in_.size()) return Error("unexpected end of filter, expected value");
    if (IsQuote(in_[pos_])) {
      absl::StatusOr<std::string> v = ParseQuoted(sel->op == Selector::Op::kMatches);
      if (!v.ok()) return v.status();
      sel->value = std::move(*v);
    } else {
      size_t start = pos_;
      while (pos_ < in_.size() && in_[pos_] != ',' && !IsSpace(in_[pos_])) ++pos_;
      sel->value = std::string(in_.substr(start, pos_ - start));
    }
    if (sel->op == Selector::Op::kMatches) {
      try {
        sel->re.emplace(sel->value, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        return Error(absl::StrCat("invalid regular expression ", sel->value));
      }
    }
    return sel;
  }

  absl::string_view in_;
  size_t pos_ = 0;
};

// containerd's storage adaptSnapshot.
std::optional<std::string> Field(const SnapshotInfo& info, const std::vector<std::string>& path) {
  if (path.empty()) return std::nullopt;
  const std::string& head = path[0];
  if (head == "kind") {
    if (info.kind == SnapshotKind::kUnknown) return std::nullopt;
    return std::string(SnapshotKindName(info.kind));
  }
  if (head == "name") return info.name;
  if (head == "parent") return info.parent;
  if (head == "labels") {
    if (info.labels.empty()) return std::nullopt;
    std::string key = absl::StrJoin(path.begin() + 1, path.end(), ".");
    auto it = info.labels.find(key);
    if (it == info.labels.end()) return std::nullopt;
    return it->second;
  }
  return std::nullopt;
}

bool MatchSelector(const Selector& sel, const SnapshotInfo& info) {
  std::optional<std::string> value = Field(info, sel.fieldpath);
  switch (sel.op) {
    case Selector::Op::kPresent:
      return value.has_value();
    case Selector::Op::kEqual:
      return value.has_value() && *value == sel.value;
    case Selector::Op::kNotEqual:
      return value.value_or("") != sel.value;
    case Selector::Op::kMatches:
      return std::regex_search(value.value_or(""), *sel.re);
  }
  return false;
}

}  // namespace

absl::StatusOr<SnapshotFilter> SnapshotFilter::Parse(const std::vector<std::string>& filters) {
  SnapshotFilter out;
  for (const std::string& f : filters) {
    if (f.empty()) {
      out.any_of_.push_back({});  // matches everything
      continue;
    }
    absl::StatusOr<std::vector<std::shared_ptr<const Selector>>> all = Parser(f).Parse();
    if (!all.ok()) return all.status();
    out.any_of_.push_back(std::move(*all));
  }
  return out;
}

bool SnapshotFilter::Match(const SnapshotInfo& info) const {
  if (any_of_.empty()) return true;
  for (const auto& all : any_of_) {
    bool ok = true;
    for (const auto& sel : all) {
      if (!MatchSelector(*sel, info)) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

}  // namespace lazypull
