#include "tests/format/toc_json_reference.h"

#include <limits>

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::format::testing {

void RefTocEntry::Clear() {
  name.clear();
  type.clear();
  link_name.clear();
  modtime.clear();
  user_name.clear();
  group_name.clear();
  digest.clear();
  chunk_digest.clear();
  chunk_type.clear();
  mode = size = uid = gid = dev_major = dev_minor = 0;
  offset = end_offset = inner_offset = chunk_offset = chunk_size = 0;
  xattrs.clear();
}

namespace {

using json = nlohmann::json;

// Depths: 1 = top object, 2 = "entries" array, 3 = one entry, 4 = its "xattrs" object.
class TocSax {
 public:
  TocSax(RefTocHeader* header, const std::function<absl::Status(RefTocEntry&)>& on_entry)
      : header_(header), on_entry_(on_entry) {}

  absl::Status status() const { return status_; }

  bool null() { return Scalar(); }
  bool boolean(bool) { return Scalar(); }
  bool number_integer(json::number_integer_t v) {
    if (v < 0) return Number(-1, true);
    return Number(v, false);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return Number(0, true);
    return Number(static_cast<int64_t>(v), false);
  }
  bool number_float(json::number_float_t, const std::string&) {
    // Fix 2: only an entry's own number fields (it looked at the last key at any depth).
    if (int64_t* f = NumberField(); f != nullptr && depth_ == 3 && !skipping()) {
      return Fail(fmt::format("field \"{}\" is not an integer", key_));
    }
    return Scalar();
  }
  bool string(std::string& v) {
    if (depth_ == 0) return Fail("the TOC is not a JSON object");  // fix 1
    if (depth_ == 4 && in_xattrs_) {
      entry_.xattrs.emplace_back(std::move(key4_), std::move(v));
      return true;
    }
    if (depth_ == 1 && !skipping()) {
      if (key_ == "tarSplitDigest") header_->tar_split_digest = std::move(v);
      if (key_ == "version") return Fail("\"version\" is not a number");
      if (key_ == "entries") return Fail("\"entries\" is not an array");
      return true;
    }
    if (depth_ != 3 || skipping()) return true;
    if (std::string* f = StringField(); f != nullptr) {
      *f = std::move(v);
      return true;
    }
    if (NumberField() != nullptr) return Fail(fmt::format("field \"{}\" is not a number", key_));
    return true;
  }
  bool binary(json::binary_t&) { return Scalar(); }
  bool start_object(std::size_t) {
    ++depth_;
    if (depth_ == 1) return true;
    if (skipping()) return true;
    if (depth_ == 2) {
      if (key_ == "entries") return Fail("\"entries\" is not an array");
      skip_from_ = depth_;
      return true;
    }
    if (depth_ == 3 && in_entries_) {
      entry_.Clear();
      return true;
    }
    if (depth_ == 4 && key_ == "xattrs") {
      in_xattrs_ = true;
      return true;
    }
    if (depth_ == 4 && (StringField() != nullptr || NumberField() != nullptr)) {
      return Fail(fmt::format("field \"{}\" has the wrong type", key_));
    }
    skip_from_ = depth_;
    return true;
  }
  bool key(std::string& k) {
    if (skipping()) return true;
    if (depth_ == 4) {
      key4_ = std::move(k);
    } else {
      key_ = std::move(k);
    }
    return true;
  }
  bool end_object() {
    if (depth_ == 3 && in_entries_ && !skipping()) {
      if (++count_ == 0) return Fail("entry counter overflow");
      absl::Status st = on_entry_(entry_);
      if (!st.ok()) {
        status_ = st;
        return false;
      }
    }
    if (depth_ == 4) in_xattrs_ = false;
    EndContainer();
    return true;
  }
  bool start_array(std::size_t) {
    ++depth_;
    if (depth_ == 1) return Fail("the TOC is not a JSON object");
    if (skipping()) return true;
    if (depth_ == 2 && key_ == "entries") {
      in_entries_ = true;
      return true;
    }
    if (depth_ == 4 && (StringField() != nullptr || NumberField() != nullptr || key_ == "xattrs")) {
      return Fail(fmt::format("field \"{}\" has the wrong type", key_));
    }
    skip_from_ = depth_;
    return true;
  }
  bool end_array() {
    if (depth_ == 2) in_entries_ = false;
    EndContainer();
    return true;
  }
  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& ex) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          fmt::format("TOC is not valid JSON at byte {}: {}", position, ex.what()));
    }
    return false;
  }

 private:
  bool skipping() const { return skip_from_ != 0 && depth_ >= skip_from_; }
  void EndContainer() {
    if (skip_from_ == depth_) skip_from_ = 0;
    --depth_;
  }
  bool Fail(std::string msg) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(fmt::format("TOC entry {}: {}", count_, msg));
    }
    return false;
  }
  bool Scalar() {
    if (depth_ == 0) return Fail("the TOC is not a JSON object");
    if (depth_ == 1 && !skipping() && key_ == "entries") {
      return Fail("\"entries\" is not an array");
    }
    if (depth_ == 2 && in_entries_ && !skipping()) return Fail("an entry is not a JSON object");
    if (depth_ == 4 && in_xattrs_) {
      return Fail(fmt::format("xattr \"{}\" value is not a string", key4_));
    }
    if (depth_ == 3 && !skipping() && StringField() != nullptr && !IsNullOk()) {
      return Fail(fmt::format("field \"{}\" is not a string", key_));
    }
    return true;
  }
  bool IsNullOk() const { return true; }
  bool Number(int64_t v, bool bad) {
    if (depth_ == 0) return Fail("the TOC is not a JSON object");  // fix 1
    if (depth_ == 1 && !skipping()) {
      if (key_ == "version") {
        if (bad) return Fail("bad TOC version");
        header_->version = v;
      }
      if (key_ == "entries") return Fail("\"entries\" is not an array");
      return true;
    }
    if (depth_ == 4 && in_xattrs_) return Fail(fmt::format("xattr \"{}\" is not a string", key4_));
    if (depth_ == 2 && in_entries_ && !skipping()) return Fail("an entry is not a JSON object");
    if (depth_ != 3 || skipping()) return true;
    if (int64_t* f = NumberField(); f != nullptr) {
      if (bad) return Fail(fmt::format("field \"{}\" is negative or too large", key_));
      *f = v;
      return true;
    }
    if (StringField() != nullptr) return Fail(fmt::format("field \"{}\" is not a string", key_));
    return true;
  }
  std::string* StringField() {
    if (key_ == "name") return &entry_.name;
    if (key_ == "type") return &entry_.type;
    if (key_ == "linkName") return &entry_.link_name;
    if (key_ == "modtime") return &entry_.modtime;
    if (key_ == "userName") return &entry_.user_name;
    if (key_ == "groupName") return &entry_.group_name;
    if (key_ == "digest") return &entry_.digest;
    if (key_ == "chunkDigest") return &entry_.chunk_digest;
    if (key_ == "chunkType") return &entry_.chunk_type;
    return nullptr;
  }
  int64_t* NumberField() {
    if (key_ == "mode") return &entry_.mode;
    if (key_ == "size") return &entry_.size;
    if (key_ == "uid") return &entry_.uid;
    if (key_ == "gid") return &entry_.gid;
    if (key_ == "devMajor") return &entry_.dev_major;
    if (key_ == "devMinor") return &entry_.dev_minor;
    if (key_ == "offset") return &entry_.offset;
    if (key_ == "endOffset") return &entry_.end_offset;
    if (key_ == "innerOffset") return &entry_.inner_offset;
    if (key_ == "chunkOffset") return &entry_.chunk_offset;
    if (key_ == "chunkSize") return &entry_.chunk_size;
    return nullptr;
  }

  RefTocHeader* header_;
  const std::function<absl::Status(RefTocEntry&)>& on_entry_;
  absl::Status status_;
  RefTocEntry entry_;
  std::string key_;
  std::string key4_;
  int depth_ = 0;
  int skip_from_ = 0;
  bool in_entries_ = false;
  bool in_xattrs_ = false;
  uint64_t count_ = 0;
};

}  // namespace

absl::Status ParseTocJsonReference(std::string_view text, RefTocHeader* header,
                                   const std::function<absl::Status(RefTocEntry&)>& on_entry) {
  RefTocHeader local;
  if (header == nullptr) header = &local;
  TocSax sax(header, on_entry);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(fmt::format("TOC is not valid JSON: {}", e.what()));
  }
  if (!ok) {
    absl::Status st = sax.status();
    return st.ok() ? absl::InvalidArgumentError("TOC is not valid JSON") : st;
  }
  if (header->version != 0 && header->version != 1) {
    return absl::InvalidArgumentError(
        fmt::format("unsupported TOC version {} (want 1)", header->version));
  }
  return absl::OkStatus();
}

}  // namespace lazypull::format::testing
