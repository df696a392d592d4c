#include "fetcher/format/toc_common.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/time/time.h"
#include "fetcher/format/status_util.h"
#include "fmt/format.h"
#include "lazypull/digest.h"

namespace lazypull::format {
namespace {

absl::Status EntryError(const TocEntry& e, std::string_view what) {
  return absl::InvalidArgumentError(
      fmt::format("TOC entry \"{}\": {}", std::string_view(e.name).substr(0, 512), what));
}

}  // namespace

absl::Status ParseRfc3339(std::string_view text, int64_t* sec, uint32_t* nsec) {
  *sec = 0;
  *nsec = 0;
  if (text.empty()) return absl::OkStatus();
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &err)) {
    return absl::InvalidArgumentError(
        fmt::format("bad RFC 3339 time \"{}\": {}", text.substr(0, 64), err));
  }
  absl::Duration since = t - absl::UnixEpoch();
  int64_t s = absl::ToInt64Seconds(since);
  absl::Duration rem = since - absl::Seconds(s);
  if (rem < absl::ZeroDuration()) {
    s -= 1;
    rem += absl::Seconds(1);
  }
  *sec = s;
  *nsec = static_cast<uint32_t>(absl::ToInt64Nanoseconds(rem));
  return absl::OkStatus();
}

absl::Status ParseSha256(std::string_view text, std::string_view what,
                         std::array<uint8_t, 32>* out) {
  absl::StatusOr<Digest> d = Digest::Parse(text);
  if (!d.ok()) return absl::InvalidArgumentError(fmt::format("{}: {}", what, Msg(d.status())));
  const std::string raw = d->Raw();
  std::copy(raw.begin(), raw.end(), out->begin());
  return absl::OkStatus();
}

absl::StatusOr<EntryMeta> MetaFromEntry(const TocEntry& e) {
  EntryMeta m;
  m.permissions = static_cast<uint32_t>(e.mode & 07777);
  if (e.uid > UINT32_MAX || e.gid > UINT32_MAX) return EntryError(e, "uid/gid out of range");
  m.uid = static_cast<uint32_t>(e.uid);
  m.gid = static_cast<uint32_t>(e.gid);
  if (auto st = ParseRfc3339(e.modtime, &m.mtime_sec, &m.mtime_nsec); !st.ok()) {
    return EntryError(e, Msg(st));
  }
  m.xattrs.reserve(e.xattrs.size());
  for (const auto& [name, b64] : e.xattrs) {
    std::string value;
    if (!absl::Base64Unescape(b64, &value)) {
      return EntryError(e, fmt::format("xattr \"{}\" value is not base64", name));
    }
    m.xattrs.emplace_back(name, std::move(value));
  }
  return m;
}

absl::Status AddNonRegular(LayerIndexBuilder& builder, const TocEntry& e, const EntryMeta& meta) {
  const std::string& t = e.type;
  if (t == "dir") return builder.AddDirectory(e.name, meta);
  if (t == "symlink") return builder.AddSymlink(e.name, meta, e.link_name);
  if (t == "hardlink") {
    if (e.link_name.empty()) return EntryError(e, "hardlink without linkName");
    return builder.AddHardlink(e.name, e.link_name);
  }
  if (t == "char" || t == "block") {
    if (e.dev_major > UINT32_MAX || e.dev_minor > UINT32_MAX) {
      return EntryError(e, "device number out of range");
    }
    return builder.AddDevice(e.name, meta, t == "char" ? S_IFCHR : S_IFBLK,
                             static_cast<uint32_t>(e.dev_major),
                             static_cast<uint32_t>(e.dev_minor));
  }
  if (t == "fifo") return builder.AddFifo(e.name, meta);
  return EntryError(e, fmt::format("unknown entry type \"{}\"", t.substr(0, 32)));
}

}  // namespace lazypull::format
