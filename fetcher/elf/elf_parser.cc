#include "fetcher/elf/elf_parser.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull::elf {
namespace {

constexpr uint32_t kPtLoad = 1;
constexpr uint32_t kPtDynamic = 2;
constexpr uint32_t kPtInterp = 3;
constexpr uint16_t kPnXnum = 0xffff;

constexpr int64_t kDtNull = 0;
constexpr int64_t kDtNeeded = 1;
constexpr int64_t kDtStrtab = 5;
constexpr int64_t kDtStrsz = 10;
constexpr int64_t kDtSoname = 14;
constexpr int64_t kDtRpath = 15;
constexpr int64_t kDtRunpath = 29;
constexpr int64_t kDtFlags1 = 0x6ffffffb;

// Strings referenced by the dynamic section that lie close together are asked for as one
// range: a few KiB more cost less than another round trip.
constexpr uint64_t kStringGap = 16 << 10;

// Fixed-width reads from a view whose size the caller has checked.
class Decoder {
 public:
  Decoder(std::string_view data, bool big_endian) : data_(data), big_(big_endian) {}
  uint64_t U(size_t offset, size_t width) const {
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) {
      uint64_t byte = static_cast<uint8_t>(data_[offset + (big_ ? i : width - 1 - i)]);
      v = (v << 8) | byte;
    }
    return v;
  }
  uint16_t U16(size_t offset) const { return static_cast<uint16_t>(U(offset, 2)); }
  uint32_t U32(size_t offset) const { return static_cast<uint32_t>(U(offset, 4)); }
  uint64_t U64(size_t offset) const { return U(offset, 8); }

 private:
  std::string_view data_;
  bool big_;
};

// [offset, offset + length) lies inside a file of `size` bytes (no overflow).
bool InFile(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// One string a dynamic entry points at: the table offset and where to store the result.
struct StringRef {
  uint64_t offset = 0;
  std::string* out = nullptr;
  const char* what = "";
};

struct ProgramHeaderTable {
  uint64_t offset = 0;
  uint64_t entry_size = 0;
  uint64_t count = 0;
};

absl::StatusOr<ProgramHeaderTable> HeaderFields(std::string_view h, ElfInfo& info,
                                                const ElfLimits& limits) {
  Decoder d(h, info.big_endian);
  info.type = d.U16(16);
  info.machine = d.U16(18);
  info.os_abi = static_cast<uint8_t>(h[7]);
  ProgramHeaderTable t;
  uint64_t want_entry;
  if (info.is_64) {
    t.offset = d.U64(32);
    info.flags = d.U32(48);
    t.entry_size = d.U16(54);
    t.count = d.U16(56);
    want_entry = 56;
  } else {
    t.offset = d.U32(28);
    info.flags = d.U32(36);
    t.entry_size = d.U16(42);
    t.count = d.U16(44);
    want_entry = 32;
  }
  if (t.count == kPnXnum || t.count > limits.max_program_headers) {
    return absl::ResourceExhaustedError(fmt::format("ELF header: {} program headers (limit {})",
                                                    t.count, limits.max_program_headers));
  }
  if (t.count > 0 && t.entry_size != want_entry) {
    return absl::DataLossError(
        fmt::format("ELF header: program header size {} (want {})", t.entry_size, want_entry));
  }
  if (!InFile(t.offset, t.count * t.entry_size, info.file_size)) {
    return absl::DataLossError(
        fmt::format("ELF header: {} program headers at offset {} pass the end of the {}-byte file",
                    t.count, t.offset, info.file_size));
  }
  return t;
}

absl::Status ParseProgramHeaders(std::string_view table, const ProgramHeaderTable& t, ElfInfo& info,
                                 const ElfLimits& limits) {
  Decoder d(table, info.big_endian);
  for (uint64_t i = 0; i < t.count; ++i) {
    size_t at = i * t.entry_size;
    uint32_t type = d.U32(at);
    LoadSegment s;
    if (info.is_64) {
      s.flags = d.U32(at + 4);
      s.offset = d.U64(at + 8);
      s.vaddr = d.U64(at + 16);
      s.file_size = d.U64(at + 32);
      s.mem_size = d.U64(at + 40);
    } else {
      s.offset = d.U32(at + 4);
      s.vaddr = d.U32(at + 8);
      s.file_size = d.U32(at + 16);
      s.mem_size = d.U32(at + 20);
      s.flags = d.U32(at + 24);
    }
    if (type != kPtLoad && type != kPtDynamic && type != kPtInterp) continue;
    if (!InFile(s.offset, s.file_size, info.file_size)) {
      return absl::DataLossError(
          fmt::format("program header {} (type {}): [{}, +{}) passes the end of the {}-byte file",
                      i, type, s.offset, s.file_size, info.file_size));
    }
    if (type == kPtLoad) {
      info.loads.push_back(s);
    } else if (type == kPtInterp && !info.interp_range) {
      // The kernel takes the first PT_INTERP and wants it NUL-terminated.
      if (s.file_size < 2 || s.file_size > limits.max_interp) {
        return absl::DataLossError(
            fmt::format("PT_INTERP: size {} (want 2..{})", s.file_size, limits.max_interp));
      }
      info.interp_range = ByteRange{s.offset, s.file_size};
    } else if (type == kPtDynamic && !info.dynamic_range) {
      info.dynamic_range = ByteRange{s.offset, s.file_size};
    }
  }
  return absl::OkStatus();
}

absl::Status ParseInterp(std::string_view bytes, ElfInfo& info) {
  if (bytes.back() != '\0') {
    return absl::DataLossError(
        fmt::format("PT_INTERP at {}: not NUL-terminated", info.interp_range->offset));
  }
  std::string path(bytes.substr(0, bytes.find('\0')));
  if (path.empty()) {
    return absl::DataLossError(fmt::format("PT_INTERP at {}: empty", info.interp_range->offset));
  }
  info.interpreter = std::move(path);
  return absl::OkStatus();
}

// The file offset of virtual address `vaddr` through the PT_LOAD that maps it from the file,
// and the end of that segment's file bytes.
std::optional<std::pair<uint64_t, uint64_t>> VaddrToOffset(const ElfInfo& info, uint64_t vaddr) {
  for (const LoadSegment& s : info.loads) {
    if (vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size) {
      return std::make_pair(s.offset + (vaddr - s.vaddr), s.offset + s.file_size);
    }
  }
  return std::nullopt;
}

// Parses the dynamic section and, when the strings it names are all held, fills the
// string fields of `info`; otherwise adds the string ranges to info.missing.
absl::Status ParseDynamic(std::string_view dyn, const FileBytes& bytes, ElfInfo& info,
                          const ElfLimits& limits) {
  Decoder d(dyn, info.big_endian);
  const size_t entry = info.is_64 ? 16 : 8;
  const size_t count = dyn.size() / entry;
  std::vector<uint64_t> needed;
  // Tag values; a tag is present when its bit of `seen` is set (GCC misreads optionals here).
  enum : uint32_t { kStrtab = 1, kStrsz = 2, kSoname = 4, kRpath = 8, kRunpath = 16 };
  uint32_t seen = 0;
  uint64_t strtab = 0, strsz = 0, soname = 0, rpath = 0, runpath = 0;
  for (size_t i = 0; i < count; ++i) {
    if (i >= limits.max_dynamic_entries) {
      return absl::ResourceExhaustedError(
          fmt::format("PT_DYNAMIC at {}: no DT_NULL in the first {} entries",
                      info.dynamic_range->offset, limits.max_dynamic_entries));
    }
    int64_t tag;
    uint64_t val;
    if (info.is_64) {
      tag = static_cast<int64_t>(d.U64(i * entry));
      val = d.U64(i * entry + 8);
    } else {
      tag = static_cast<int32_t>(d.U32(i * entry));
      val = d.U32(i * entry + 4);
    }
    if (tag == kDtNull) break;
    switch (tag) {
      case kDtNeeded:
        if (needed.size() >= limits.max_needed) {
          return absl::ResourceExhaustedError(
              fmt::format("PT_DYNAMIC at {}: more than {} DT_NEEDED entries",
                          info.dynamic_range->offset, limits.max_needed));
        }
        needed.push_back(val);
        break;
      case kDtStrtab:
        strtab = val;
        seen |= kStrtab;
        break;
      case kDtStrsz:
        strsz = val;
        seen |= kStrsz;
        break;
      case kDtSoname:
        soname = val;
        seen |= kSoname;
        break;
      case kDtRpath:
        rpath = val;
        seen |= kRpath;
        break;
      case kDtRunpath:
        runpath = val;
        seen |= kRunpath;
        break;
      case kDtFlags1:
        info.flags_1 = val;
        break;
      default:
        break;
    }
  }
  // ld.so ignores DT_RPATH when DT_RUNPATH is present (get-dynamic-info.h).
  if (seen & kRunpath) seen &= ~kRpath;
  if (needed.empty() && !(seen & (kSoname | kRpath | kRunpath))) return absl::OkStatus();
  if (!(seen & kStrtab)) {
    return absl::DataLossError(
        fmt::format("PT_DYNAMIC at {}: strings without DT_STRTAB", info.dynamic_range->offset));
  }
  auto located = VaddrToOffset(info, strtab);
  if (!located) {
    return absl::DataLossError(
        fmt::format("DT_STRTAB {:#x}: not inside the file bytes of any PT_LOAD segment", strtab));
  }
  auto [table, table_end] = *located;
  if ((seen & kStrsz) && strsz < table_end - table) table_end = table + strsz;

  std::vector<std::string> needed_strings(needed.size());
  std::string soname_s, rpath_s, runpath_s;
  std::vector<StringRef> refs;
  for (size_t i = 0; i < needed.size(); ++i) {
    refs.push_back({needed[i], &needed_strings[i], "DT_NEEDED"});
  }
  if (seen & kSoname) refs.push_back({soname, &soname_s, "DT_SONAME"});
  if (seen & kRpath) refs.push_back({rpath, &rpath_s, "DT_RPATH"});
  if (seen & kRunpath) refs.push_back({runpath, &runpath_s, "DT_RUNPATH"});

  std::vector<ByteRange> missing;
  for (const StringRef& r : refs) {
    if (r.offset >= table_end - table) {
      return absl::DataLossError(fmt::format("{} string offset {} outside the {}-byte string table",
                                             r.what, r.offset, table_end - table));
    }
    uint64_t start = table + r.offset;
    uint64_t window = std::min<uint64_t>(table_end - start, uint64_t{limits.max_string} + 1);
    std::string_view v = bytes.GetPrefix(start, window);
    size_t nul = v.find('\0');
    if (nul != std::string_view::npos) {
      r.out->assign(v.substr(0, nul));
      continue;
    }
    if (v.size() < window) {
      missing.push_back({start + v.size(), window - v.size()});
      continue;
    }
    if (window > limits.max_string) {
      return absl::ResourceExhaustedError(
          fmt::format("{} string at {}: longer than {} bytes", r.what, start, limits.max_string));
    }
    return absl::DataLossError(
        fmt::format("{} string at {}: not NUL-terminated in the string table", r.what, start));
  }
  if (!missing.empty()) {
    for (const ByteRange& m : CoalesceRanges(std::move(missing), kStringGap)) {
      for (const ByteRange& absent : bytes.Missing(m)) info.missing.push_back(absent);
    }
    return absl::OkStatus();
  }
  info.needed = std::move(needed_strings);
  if (seen & kSoname) info.soname = std::move(soname_s);
  if (seen & kRpath) info.rpath = std::move(rpath_s);
  if (seen & kRunpath) info.runpath = std::move(runpath_s);
  return absl::OkStatus();
}

}  // namespace

std::vector<ByteRange> ElfInfo::LoadRanges(uint64_t max_lazy_data) const {
  constexpr uint32_t kPfWrite = 2, kPfExec = 1;
  std::vector<ByteRange> r;
  for (size_t i = 0; i < loads.size(); ++i) {
    const LoadSegment& s = loads[i];
    if (i > 0 && (s.flags & (kPfWrite | kPfExec)) == 0 && s.file_size > max_lazy_data) continue;
    if (s.offset >= file_size) continue;
    r.push_back({s.offset, std::min(s.file_size, file_size - s.offset)});
  }
  return CoalesceRanges(std::move(r));
}

bool IsElfMagic(std::string_view head) {
  return head.substr(0, 4) ==
         "\x7f"
         "ELF";
}

absl::StatusOr<ElfInfo> ParseElf(const FileBytes& bytes, const ElfLimits& limits) {
  ElfInfo info;
  info.file_size = bytes.file_size();
  const uint64_t size = info.file_size;
  // e_ident: magic, class, data, version.
  std::string_view ident = bytes.GetPrefix(0, 16);
  if (ident.size() < std::min<uint64_t>(size, 16)) {
    info.missing = bytes.Missing({0, std::min<uint64_t>(size, 64)});
    return info;
  }
  if (!IsElfMagic(ident)) return absl::InvalidArgumentError("not an ELF file");
  if (ident.size() < 16) {
    return absl::DataLossError(fmt::format("truncated ELF header: the file has {} bytes", size));
  }
  if (ident[4] != 1 && ident[4] != 2) {
    return absl::DataLossError(fmt::format("ELF header: class {}", int{ident[4]}));
  }
  if (ident[5] != 1 && ident[5] != 2) {
    return absl::DataLossError(fmt::format("ELF header: data encoding {}", int{ident[5]}));
  }
  if (ident[6] != 1) {
    return absl::DataLossError(fmt::format("ELF header: version {}", int{ident[6]}));
  }
  info.is_64 = ident[4] == 2;
  info.big_endian = ident[5] == 2;
  const uint64_t header_size = info.is_64 ? 64 : 52;
  if (size < header_size) {
    return absl::DataLossError(fmt::format(
        "truncated ELF header: the file has {} bytes, the header needs {}", size, header_size));
  }
  auto header = bytes.Get(0, header_size);
  if (!header) {
    info.missing = bytes.Missing({0, header_size});
    return info;
  }
  auto table = HeaderFields(*header, info, limits);
  if (!table.ok()) return table.status();
  info.have_header = true;

  auto ph = bytes.Get(table->offset, table->count * table->entry_size);
  if (!ph) {
    info.missing = bytes.Missing({table->offset, table->count * table->entry_size});
    return info;
  }
  if (absl::Status s = ParseProgramHeaders(*ph, *table, info, limits); !s.ok()) return s;
  info.have_program_headers = true;

  std::vector<ByteRange> missing;
  if (info.interp_range) {
    auto interp = bytes.Get(info.interp_range->offset, info.interp_range->length);
    if (!interp) {
      for (const ByteRange& m : bytes.Missing(*info.interp_range)) missing.push_back(m);
    } else if (absl::Status s = ParseInterp(*interp, info); !s.ok()) {
      return s;
    }
  }
  if (info.dynamic_range) {
    auto dyn = bytes.Get(info.dynamic_range->offset, info.dynamic_range->length);
    if (!dyn) {
      for (const ByteRange& m : bytes.Missing(*info.dynamic_range)) missing.push_back(m);
    } else if (absl::Status s = ParseDynamic(*dyn, bytes, info, limits); !s.ok()) {
      return s;
    }
  }
  for (const ByteRange& m : info.missing) missing.push_back(m);
  info.missing = CoalesceRanges(std::move(missing));
  return info;
}

absl::StatusOr<ElfInfo> ParseElf(std::string_view head, uint64_t file_size,
                                 const ElfLimits& limits) {
  FileBytes bytes(file_size);
  bytes.Add(0, head);
  return ParseElf(bytes, limits);
}

absl::StatusOr<ElfInfo> ReadElf(FileBytes& bytes, const RangeReader& read, const ElfLimits& limits,
                                int max_rounds) {
  for (int round = 0;; ++round) {
    auto info = ParseElf(bytes, limits);
    if (!info.ok() || info->complete()) return info;
    if (round >= max_rounds) {
      return absl::ResourceExhaustedError(
          fmt::format("ELF parse still incomplete after {} read rounds", max_rounds));
    }
    for (const ByteRange& r : info->missing) {
      auto data = read(r);
      if (!data.ok()) return data.status();
      if (data->size() != r.length) {
        return absl::DataLossError(
            fmt::format("short read at {}: {} of {} bytes", r.offset, data->size(), r.length));
      }
      bytes.Add(r.offset, *data);
    }
  }
}

}  // namespace lazypull::elf
