#include "fetcher/python/pyc_imports.h"

#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::python {

namespace {

constexpr uint32_t kMinMagic = 3390;         // CPython 3.7a1: 16-byte header
constexpr uint32_t kPosOnlyMagic = 3400;     // 3.8: co_posonlyargcount
constexpr uint32_t kNoNlocalsMagic = 3450;   // 3.11: co_nlocals gone, localsplus
constexpr uint32_t kNewOpcodesMagic = 3550;  // 3.13: opcode numbers renumbered
constexpr uint32_t kMaxMagic = 3599;
constexpr size_t kHeaderSize = 16;

constexpr uint8_t kImportName = 108;
constexpr uint8_t kImportFrom = 109;
constexpr uint8_t kExtendedArg = 144;
constexpr uint8_t kFlagRef = 0x80;

uint32_t MagicOf(std::string_view head) {
  if (head.size() < 4 || head[2] != '\r' || head[3] != '\n') return 0;
  return static_cast<uint8_t>(head[0]) | (uint32_t{static_cast<uint8_t>(head[1])} << 8);
}

// A parsed marshal object, as far as the import scan needs it: strings and bytes keep their
// value, tuples their items, code objects their bytecode and names; the rest is kOther.
struct Value {
  enum class Kind { kOther, kString, kTuple, kCode };
  Kind kind = Kind::kOther;
  std::string text;                                 // kString (also bytes)
  std::vector<std::shared_ptr<const Value>> items;  // kTuple; kCode: {co_code, co_names}
};
using ValuePtr = std::shared_ptr<const Value>;

class MarshalReader {
 public:
  MarshalReader(std::string_view data, uint32_t magic, const PycLimits& limits)
      : data_(data), magic_(magic), limits_(limits) {}

  absl::StatusOr<ValuePtr> ReadObject(size_t depth) {
    if (depth > limits_.max_depth) {
      return absl::ResourceExhaustedError(
          fmt::format(".pyc: objects nested deeper than {}", limits_.max_depth));
    }
    if (++objects_ > limits_.max_objects) {
      return absl::ResourceExhaustedError(
          fmt::format(".pyc: more than {} marshal objects", limits_.max_objects));
    }
    absl::StatusOr<uint8_t> code = Byte();
    if (!code.ok()) return code.status();
    const bool flag = (*code & kFlagRef) != 0;
    const char type = static_cast<char>(*code & ~kFlagRef);
    // CPython assigns a back-reference index when an object starts (containers and code
    // objects before their contents), so the slot is reserved here and filled at the end.
    std::optional<size_t> slot;
    if (flag) {
      slot = refs_.size();
      refs_.push_back(nullptr);
    }
    absl::StatusOr<ValuePtr> v = ReadBody(type, depth);
    if (!v.ok()) return v;
    if (slot) refs_[*slot] = *v;
    return v;
  }

  size_t offset() const { return pos_; }

 private:
  absl::StatusOr<ValuePtr> ReadBody(char type, size_t depth) {
    static const ValuePtr kOther = std::make_shared<Value>();
    switch (type) {
      case 'N':
      case 'F':
      case 'T':
      case 'S':
      case '.':
        return kOther;
      case 'i':
        return SkipThen(4, kOther);
      case 'I':
      case 'g':
        return SkipThen(8, kOther);
      case 'y':
        return SkipThen(16, kOther);
      case 'f': {
        absl::StatusOr<uint8_t> n = Byte();
        if (!n.ok()) return n.status();
        return SkipThen(*n, kOther);
      }
      case 'x': {
        for (int i = 0; i < 2; ++i) {
          absl::StatusOr<uint8_t> n = Byte();
          if (!n.ok()) return n.status();
          if (absl::Status s = Skip(*n); !s.ok()) return s;
        }
        return kOther;
      }
      case 'l': {
        absl::StatusOr<int32_t> n = Int32();
        if (!n.ok()) return n.status();
        const int64_t digits = *n < 0 ? -int64_t{*n} : *n;
        return SkipThen(static_cast<uint64_t>(digits) * 2, kOther);
      }
      case 's':
      case 't':
      case 'u':
      case 'a':
      case 'A': {
        absl::StatusOr<int32_t> n = Int32();
        if (!n.ok()) return n.status();
        if (*n < 0) return Malformed("negative string length");
        return String(static_cast<size_t>(*n));
      }
      case 'z':
      case 'Z': {
        absl::StatusOr<uint8_t> n = Byte();
        if (!n.ok()) return n.status();
        return String(*n);
      }
      case 'r': {
        absl::StatusOr<int32_t> index = Int32();
        if (!index.ok()) return index.status();
        if (*index < 0 || static_cast<size_t>(*index) >= refs_.size() || !refs_[*index]) {
          return Malformed(fmt::format("back-reference {} to no earlier object", *index));
        }
        return refs_[*index];
      }
      case '(':
      case '[':
      case '<':
      case '>': {
        absl::StatusOr<int32_t> n = Int32();
        if (!n.ok()) return n.status();
        if (*n < 0) return Malformed("negative container size");
        return Sequence(static_cast<size_t>(*n), depth);
      }
      case ')': {
        absl::StatusOr<uint8_t> n = Byte();
        if (!n.ok()) return n.status();
        return Sequence(*n, depth);
      }
      case '{': {
        for (;;) {
          if (pos_ >= data_.size()) return Malformed("dict without end");
          if (data_[pos_] == '0') {
            ++pos_;
            return kOther;
          }
          for (int i = 0; i < 2; ++i) {
            absl::StatusOr<ValuePtr> item = ReadObject(depth + 1);
            if (!item.ok()) return item;
          }
        }
      }
      case 'c':
        return Code(depth);
      default:
        return Malformed(fmt::format("unknown object type 0x{:02x}", static_cast<uint8_t>(type)));
    }
  }

  absl::StatusOr<ValuePtr> Code(size_t depth) {
    const int ints = magic_ >= kPosOnlyMagic && magic_ < kNoNlocalsMagic ? 6 : 5;
    if (absl::Status s = Skip(4 * ints); !s.ok()) return s;
    absl::StatusOr<ValuePtr> code = ReadObject(depth + 1);
    if (!code.ok()) return code;
    absl::StatusOr<ValuePtr> consts = ReadObject(depth + 1);
    if (!consts.ok()) return consts;
    absl::StatusOr<ValuePtr> names = ReadObject(depth + 1);
    if (!names.ok()) return names;
    // 3.7–3.10: varnames, freevars, cellvars, filename, name; 3.11+: localsplusnames,
    // localspluskinds, filename, name, qualname. Then firstlineno, then one (3.7–3.10:
    // lnotab/linetable) or two (3.11+: linetable, exceptiontable) objects.
    for (int i = 0; i < 5; ++i) {
      absl::StatusOr<ValuePtr> field = ReadObject(depth + 1);
      if (!field.ok()) return field;
    }
    if (absl::Status s = Skip(4); !s.ok()) return s;
    const int tail = magic_ >= kNoNlocalsMagic ? 2 : 1;
    for (int i = 0; i < tail; ++i) {
      absl::StatusOr<ValuePtr> field = ReadObject(depth + 1);
      if (!field.ok()) return field;
    }
    auto v = std::make_shared<Value>();
    v->kind = Value::Kind::kCode;
    v->items = {*code, *names};
    return v;
  }

  absl::StatusOr<ValuePtr> Sequence(size_t n, size_t depth) {
    // Every item takes at least one byte: a count beyond the bytes left is malformed, and
    // refusing it here keeps a hostile count from reserving memory.
    if (n > data_.size() - pos_) return Malformed(fmt::format("{} items in too few bytes", n));
    auto v = std::make_shared<Value>();
    v->kind = Value::Kind::kTuple;
    v->items.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      absl::StatusOr<ValuePtr> item = ReadObject(depth + 1);
      if (!item.ok()) return item;
      v->items.push_back(*std::move(item));
    }
    return v;
  }

  absl::StatusOr<ValuePtr> String(size_t n) {
    if (n > data_.size() - pos_) return Malformed("string past the end");
    auto v = std::make_shared<Value>();
    v->kind = Value::Kind::kString;
    v->text.assign(data_.substr(pos_, n));
    pos_ += n;
    return v;
  }

  absl::StatusOr<ValuePtr> SkipThen(uint64_t n, const ValuePtr& v) {
    if (absl::Status s = Skip(n); !s.ok()) return s;
    return v;
  }

  absl::Status Skip(uint64_t n) {
    if (n > data_.size() - pos_) return Malformed("object past the end");
    pos_ += n;
    return absl::OkStatus();
  }

  absl::StatusOr<uint8_t> Byte() {
    if (pos_ >= data_.size()) return Malformed("truncated");
    return static_cast<uint8_t>(data_[pos_++]);
  }

  absl::StatusOr<int32_t> Int32() {
    if (data_.size() - pos_ < 4) return Malformed("truncated");
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += 4;
    int32_t s;
    std::memcpy(&s, &v, sizeof(s));
    return s;
  }

  absl::Status Malformed(std::string_view what) const {
    return absl::DataLossError(
        fmt::format(".pyc: malformed marshal data at byte {}: {}", pos_ + kHeaderSize, what));
  }

  std::string_view data_;
  uint32_t magic_;
  const PycLimits& limits_;
  size_t pos_ = 0;
  size_t objects_ = 0;
  std::vector<ValuePtr> refs_;
};

absl::StatusOr<std::string_view> NameAt(const Value& names, uint64_t index) {
  if (index >= names.items.size() || names.items[index]->kind != Value::Kind::kString) {
    return absl::DataLossError(
        fmt::format(".pyc: import of name {} of {}", index, names.items.size()));
  }
  return names.items[index]->text;
}

}  // namespace

bool IsPycMagic(std::string_view head) {
  const uint32_t magic = MagicOf(head);
  return magic >= kMinMagic && magic <= kMaxMagic;
}

absl::StatusOr<PycInfo> ParsePycImports(std::string_view bytes, const PycLimits& limits) {
  const uint32_t magic = MagicOf(bytes);
  if (magic == 0 || bytes.size() < kHeaderSize) {
    return absl::InvalidArgumentError("not a .pyc (no magic and 16-byte header)");
  }
  if (magic < kMinMagic || magic > kMaxMagic) {
    return absl::UnimplementedError(
        fmt::format(".pyc of an unsupported version (magic {})", magic));
  }
  MarshalReader reader(bytes.substr(kHeaderSize), magic, limits);
  absl::StatusOr<ValuePtr> top = reader.ReadObject(0);
  if (!top.ok()) return top.status();
  const Value& module = **top;
  if (module.kind != Value::Kind::kCode) {
    return absl::DataLossError(".pyc: the top object is not a code object");
  }
  const Value& code = *module.items[0];
  const Value& names = *module.items[1];
  if (code.kind != Value::Kind::kString || names.kind != Value::Kind::kTuple) {
    return absl::DataLossError(".pyc: the module's code has no bytecode or names");
  }
  PycInfo info;
  info.magic = magic;
  auto add = [&](PycImport import) -> absl::Status {
    if (info.imports.size() >= limits.max_imports) {
      return absl::ResourceExhaustedError(
          fmt::format(".pyc: more than {} imports", limits.max_imports));
    }
    info.imports.push_back(std::move(import));
    return absl::OkStatus();
  };
  if (magic >= kNewOpcodesMagic) {
    info.decoded = false;
    for (const ValuePtr& name : names.items) {
      if (name->kind != Value::Kind::kString) continue;
      if (absl::Status s = add({name->text, {}}); !s.ok()) return s;
    }
    return info;
  }
  uint64_t ext = 0;
  const std::string& ops = code.text;
  for (size_t i = 0; i + 1 < ops.size(); i += 2) {
    const uint8_t op = static_cast<uint8_t>(ops[i]);
    const uint64_t arg = ext | static_cast<uint8_t>(ops[i + 1]);
    if (op == kExtendedArg) {
      ext = arg << 8;
      if (ext > 0xffffffffu) return absl::DataLossError(".pyc: EXTENDED_ARG chain too long");
      continue;
    }
    ext = 0;
    if (op == kImportName) {
      absl::StatusOr<std::string_view> name = NameAt(names, arg);
      if (!name.ok()) return name.status();
      if (absl::Status s = add({std::string(*name), {}}); !s.ok()) return s;
    } else if (op == kImportFrom) {
      absl::StatusOr<std::string_view> name = NameAt(names, arg);
      if (!name.ok()) return name.status();
      if (info.imports.empty()) return absl::DataLossError(".pyc: IMPORT_FROM before IMPORT_NAME");
      if (info.imports.back().names.size() < limits.max_imports) {
        info.imports.back().names.emplace_back(*name);
      }
    }
  }
  return info;
}

}  // namespace lazypull::python
