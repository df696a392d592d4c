// ParseElf and FileBytes on this machine's own binaries (compared with readelf) and on
// synthetic files of the classes and byte orders it has none of.
#include <string>
#include <vector>

#include "fetcher/elf/elf_parser.h"
#include "fetcher/elf/file_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/elf/elf_test_util.h"

namespace lazypull::elf {
namespace {

using testing::BuildElf;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::ReadelfNeeded;
using testing::ReadelfSegments;
using testing::ReadelfTag;
using testing::ReadWholeFile;
using testing::SyntheticElf;

const std::string kRoot = LAZYPULL_ELF_TEST_ROOT;

bool SameRanges(const std::vector<ByteRange>& a, const std::vector<ByteRange>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].offset != b[i].offset || a[i].length != b[i].length) return false;
  }
  return true;
}

// Whole file in hand: everything readelf shows.
void ExpectMatchesReadelf(const std::string& path, const ElfInfo& info) {
  EXPECT_TRUE(info.complete());
  EXPECT_EQ(info.needed, ReadelfNeeded(path)) << path;
  EXPECT_EQ(info.soname, ReadelfTag(path, "SONAME")) << path;
  EXPECT_EQ(info.runpath, ReadelfTag(path, "RUNPATH")) << path;
  EXPECT_EQ(info.rpath, ReadelfTag(path, "RPATH")) << path;
  std::vector<ByteRange> loads;
  for (const LoadSegment& s : info.loads) loads.push_back({s.offset, s.file_size});
  EXPECT_TRUE(SameRanges(loads, ReadelfSegments(path, "LOAD"))) << path;
}

TEST(FileBytesTest, MergesPiecesAndReportsWhatIsMissing) {
  FileBytes b(100);
  b.Add(10, "abcde");
  b.Add(20, "klm");
  EXPECT_EQ(b.Get(10, 5), "abcde");
  EXPECT_FALSE(b.Get(10, 6).has_value());
  auto missing = b.Missing({0, 100});
  EXPECT_TRUE(SameRanges(missing, {{0, 10}, {15, 5}, {23, 77}}));
  b.Add(15, "fghij");  // touches both neighbours: one piece now
  EXPECT_EQ(b.Get(10, 13), "abcdefghijklm");
  EXPECT_EQ(b.GetPrefix(12, 100), "cdefghijklm");
  EXPECT_EQ(b.GetPrefix(9, 100), "");
  b.Add(98, "xyz");  // past the end: clipped
  EXPECT_EQ(b.Get(98, 2), "xy");
  EXPECT_FALSE(b.Get(98, 3).has_value());
  EXPECT_EQ(b.bytes_held(), 15u);
  EXPECT_TRUE(
      SameRanges(CoalesceRanges({{50, 5}, {10, 5}, {16, 4}, {0, 0}}, 1), {{10, 10}, {50, 5}}));
}

TEST(ElfParserTest, PieExecutableMatchesReadelf) {
  const std::string path = "/bin/ls";
  std::string data = ReadWholeFile(path);
  auto info = ParseElf(data, data.size());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->is_64);
  EXPECT_FALSE(info->big_endian);
  EXPECT_EQ(info->type, kEtDyn);
  EXPECT_EQ(info->machine, kEmX8664);
  EXPECT_EQ(info->interpreter, "/lib64/ld-linux-x86-64.so.2");
  EXPECT_FALSE(info->is_static());
  ExpectMatchesReadelf(path, *info);
  EXPECT_THAT(info->needed, ::testing::Contains("libc.so.6"));
}

TEST(ElfParserTest, PythonExecutableMatchesReadelf) {
  const std::string path = "/usr/bin/python3";  // installed by scripts/install-deps.sh
  std::string data = ReadWholeFile(path);
  auto info = ParseElf(data, data.size());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->interpreter, "/lib64/ld-linux-x86-64.so.2");
  ExpectMatchesReadelf(path, *info);
}

TEST(ElfParserTest, LibraryWithRunpath) {
  const std::string path = kRoot + "/app/libelfrunpath.so";
  std::string data = ReadWholeFile(path);
  auto info = ParseElf(data, data.size());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->type, kEtDyn);
  EXPECT_FALSE(info->interpreter.has_value());
  EXPECT_EQ(info->runpath, "$ORIGIN/../lib");
  EXPECT_FALSE(info->rpath.has_value());
  EXPECT_EQ(info->soname, "libelfrunpath.so");
  EXPECT_THAT(info->needed, ::testing::Contains("libelfdep.so"));
  ExpectMatchesReadelf(path, *info);
}

TEST(ElfParserTest, LibraryWithRpath) {
  const std::string path = kRoot + "/app/libelfrpath.so";
  std::string data = ReadWholeFile(path);
  auto info = ParseElf(data, data.size());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->rpath, "$ORIGIN/../lib");
  EXPECT_FALSE(info->runpath.has_value());
  ExpectMatchesReadelf(path, *info);
}

TEST(ElfParserTest, StaticBinary) {
  const std::string path = "/bin/busybox";  // busybox-static
  std::string data = ReadWholeFile(path);
  auto info = ParseElf(data, data.size());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->complete());
  EXPECT_TRUE(info->is_static());
  EXPECT_FALSE(info->interpreter.has_value());
  EXPECT_THAT(info->needed, IsEmpty());
  EXPECT_THAT(ReadelfSegments(path, "INTERP"), IsEmpty());
  EXPECT_THAT(ReadelfSegments(path, "DYNAMIC"), IsEmpty());
  ExpectMatchesReadelf(path, *info);
  // What the loader maps is the whole of the LOAD segments.
  EXPECT_FALSE(info->LoadRanges().empty());
}

// The prefetch's view of a large library: a data-only library (ICU's table library: R, a
// tiny R+X, a 31 MB R table, R+W, as Debian's libicudata.so.72 is laid out) leaves its table
// to the program's reads; a code library (libnode's layout) keeps every segment, its 8.5 MB
// read-only data included, as it is under the limit.
TEST(ElfParserTest, LoadRangesLeaveLargeReadOnlyDataOut) {
  constexpr uint32_t kR = 4, kW = 2, kX = 1;
  using Pairs = std::vector<std::pair<uint64_t, uint64_t>>;
  auto pairs = [](const std::vector<ByteRange>& ranges) {
    Pairs out;
    for (const ByteRange& r : ranges) out.emplace_back(r.offset, r.length);
    return out;
  };
  ElfInfo icu;
  icu.file_size = 0x1dd0008;
  icu.loads = {{0x0, 0x400, 0x0, 0x400, kR},
               {0x1000, 0x105, 0x1000, 0x105, kR | kX},
               {0x2000, 0x1dcde04, 0x2000, 0x1dcde04, kR},
               {0x1dcfe28, 0x1e0, 0x1dd0e28, 0x1e8, kR | kW}};
  EXPECT_EQ(pairs(icu.LoadRanges(16 << 20)),
            (Pairs{{0x0, 0x400}, {0x1000, 0x105}, {0x1dcfe28, 0x1e0}}));
  EXPECT_EQ(pairs(icu.LoadRanges()),
            (Pairs{{0x0, 0x400}, {0x1000, 0x105}, {0x2000, 0x1dcde04}, {0x1dcfe28, 0x1e0}}));
  ElfInfo node;
  node.file_size = 0x2d40000;
  node.loads = {{0x0, 0x891168, 0x0, 0x891168, kR},
                {0x892000, 0x1bb85d9, 0x892000, 0x1bb85d9, kR | kX},
                {0x244b000, 0x820c98, 0x244b000, 0x820c98, kR},
                {0x2c6c128, 0xd39c8, 0x2c6c128, 0xefff0, kR | kW}};
  EXPECT_EQ(pairs(node.LoadRanges(16 << 20)), pairs(node.LoadRanges()));
  EXPECT_EQ(node.LoadRanges().size(), 4u);
  // The first segment (dynamic symbols, relocations) is kept whatever its size.
  EXPECT_EQ(pairs(node.LoadRanges(1)),
            (Pairs{{0x0, 0x891168}, {0x892000, 0x1bb85d9}, {0x2c6c128, 0xd39c8}}));
}

TEST(ElfParserTest, TruncatedAndNonElfInput) {
  std::string data = ReadWholeFile("/bin/ls");
  // A 40-byte file cannot hold a 64-byte header.
  auto t = ParseElf(std::string_view(data).substr(0, 40), 40);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDataLoss) << t.status();
  // 40 bytes of a longer file: the rest of the header is asked for.
  auto head = ParseElf(std::string_view(data).substr(0, 40), data.size());
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_FALSE(head->have_header);
  EXPECT_TRUE(SameRanges(head->missing, {{40, 24}}));
  // Program headers promised past the end of the file.
  auto cut = ParseElf(std::string_view(data).substr(0, 100), 100);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss) << cut.status();
  auto text = ParseElf("#!/bin/sh\necho hi\n", 18);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(text.status().message(), "not an ELF file");
  auto tiny = ParseElf(
      "\x7f"
      "E",
      2);
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = ParseElf("", 0);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing held yet: the header is asked for.
  auto none = ParseElf("", 5000);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(SameRanges(none->missing, {{0, 64}}));
  // Bad class byte.
  std::string bad = data.substr(0, 64);
  bad[4] = 7;
  EXPECT_EQ(ParseElf(bad, data.size()).status().code(), absl::StatusCode::kDataLoss);
}

// A library's first 4 KiB: the parser asks for its dynamic section (and PT_INTERP), then for
// the strings, and ends with exactly what readelf prints.
TEST(ElfParserTest, PartialHeadAsksForTheRightRanges) {
  const std::string path = "/lib/x86_64-linux-gnu/libc.so.6";
  std::string data = ReadWholeFile(path);
  std::vector<ByteRange> dyn = ReadelfSegments(path, "DYNAMIC");
  ASSERT_EQ(dyn.size(), 1u);
  ASSERT_GT(dyn[0].offset, 4096u);
  FileBytes bytes(data.size());
  bytes.Add(0, std::string_view(data).substr(0, 4096));
  auto first = ParseElf(bytes);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->have_program_headers);
  ASSERT_TRUE(first->dynamic_range.has_value());
  EXPECT_EQ(first->dynamic_range->offset, dyn[0].offset);
  EXPECT_EQ(first->dynamic_range->length, dyn[0].length);
  std::vector<ByteRange> want = {dyn[0]};
  std::vector<ByteRange> interp = ReadelfSegments(path, "INTERP");
  for (const ByteRange& r : interp) want.push_back(r);
  EXPECT_TRUE(SameRanges(first->missing, CoalesceRanges(want)));

  int rounds = 0;
  ElfInfo info = *first;
  while (!info.complete()) {
    ASSERT_LT(++rounds, 4);
    for (const ByteRange& r : info.missing) bytes.Add(r.offset, data.substr(r.offset, r.length));
    auto next = ParseElf(bytes);
    ASSERT_TRUE(next.ok()) << next.status();
    info = *next;
  }
  EXPECT_EQ(rounds, 2);  // the dynamic section, then its strings (far from both)
  ExpectMatchesReadelf(path, info);
  EXPECT_EQ(info.needed, std::vector<std::string>{"ld-linux-x86-64.so.2"});
  EXPECT_LT(bytes.bytes_held(), 64u << 10);  // never the whole string table
}

TEST(ElfParserTest, ReadElfDrivesTheRounds) {
  const std::string path = "/usr/bin/python3";
  std::string data = ReadWholeFile(path);
  FileBytes bytes(data.size());
  bytes.Add(0, std::string_view(data).substr(0, 4096));
  int reads = 0;
  auto info = ReadElf(bytes, [&](ByteRange r) -> absl::StatusOr<std::string> {
    ++reads;
    return data.substr(r.offset, r.length);
  });
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_GE(reads, 1);
  EXPECT_EQ(info->needed, ReadelfNeeded(path));
  // A failing reader's error comes back as is.
  FileBytes fresh(data.size());
  auto err = ReadElf(fresh, [](ByteRange) -> absl::StatusOr<std::string> {
    return absl::UnavailableError("link down");
  });
  EXPECT_EQ(err.status().code(), absl::StatusCode::kUnavailable);
  // A short read is DataLoss.
  FileBytes fresh2(data.size());
  auto short_read = ReadElf(fresh2, [](ByteRange) -> absl::StatusOr<std::string> {
    return std::string(
        "\x7f"
        "ELF");
  });
  EXPECT_EQ(short_read.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ElfParserTest, SyntheticClassesAndByteOrders) {
  for (bool is_64 : {false, true}) {
    for (bool big : {false, true}) {
      SyntheticElf e;
      e.is_64 = is_64;
      e.big_endian = big;
      e.machine = big ? kEmS390 : kEm386;
      std::string data = BuildElf(e);
      SCOPED_TRACE(::testing::Message() << "64=" << is_64 << " big=" << big);
      auto whole = ParseElf(data, data.size());
      ASSERT_TRUE(whole.ok()) << whole.status();
      EXPECT_EQ(whole->is_64, is_64);
      EXPECT_EQ(whole->big_endian, big);
      EXPECT_EQ(whole->machine, e.machine);
      EXPECT_EQ(whole->interpreter, "/lib/ld-test.so.1");
      EXPECT_THAT(whole->needed, ElementsAre("liba.so.1", "libb.so.2"));
      EXPECT_EQ(whole->soname, "libsynthetic.so.1");
      EXPECT_EQ(whole->runpath, "$ORIGIN/../lib");
      // The first 4 KiB hold the headers and PT_INTERP, not the strings or the dynamic
      // section (which sit after 8 KiB of padding).
      FileBytes bytes(data.size());
      bytes.Add(0, std::string_view(data).substr(0, 4096));
      auto partial = ParseElf(bytes);
      ASSERT_TRUE(partial.ok()) << partial.status();
      EXPECT_EQ(partial->interpreter, "/lib/ld-test.so.1");
      ASSERT_EQ(partial->missing.size(), 1u);
      EXPECT_EQ(partial->missing[0].offset, partial->dynamic_range->offset);
      bytes.Add(partial->missing[0].offset,
                data.substr(partial->missing[0].offset, partial->missing[0].length));
      auto strings = ParseElf(bytes);
      ASSERT_TRUE(strings.ok()) << strings.status();
      ASSERT_FALSE(strings->complete());
      for (const ByteRange& r : strings->missing)
        bytes.Add(r.offset, data.substr(r.offset, r.length));
      auto done = ParseElf(bytes);
      ASSERT_TRUE(done.ok()) << done.status();
      EXPECT_TRUE(done->complete());
      EXPECT_THAT(done->needed, ElementsAre("liba.so.1", "libb.so.2"));
    }
  }
}

TEST(ElfParserTest, MalformedDynamicSections) {
  SyntheticElf e;
  std::string good = BuildElf(e);
  auto base = ParseElf(good, good.size());
  ASSERT_TRUE(base.ok());
  const uint64_t dyn = base->dynamic_range->offset;
  // DT_NEEDED pointing past the string table.
  std::string far = good;
  far[dyn + 8] = 0x7f;  // first entry's value (little endian, low byte)
  far[dyn + 9] = 0x7f;
  EXPECT_EQ(ParseElf(far, far.size()).status().code(), absl::StatusCode::kDataLoss);
  // The last string of the table (DT_RUNPATH) loses its NUL: unterminated within DT_STRSZ.
  std::string unterminated = good;
  unterminated[good.find("$ORIGIN/../lib") + 14] = 'x';
  EXPECT_EQ(ParseElf(unterminated, unterminated.size()).status().code(),
            absl::StatusCode::kDataLoss);
  // More DT_NEEDED than the limit.
  SyntheticElf many = e;
  many.needed.assign(300, "libx.so");
  std::string m = BuildElf(many);
  EXPECT_EQ(ParseElf(m, m.size()).status().code(), absl::StatusCode::kResourceExhausted);
  // Too many program headers.
  std::string ph = good;
  ph[56] = static_cast<char>(0xff);
  ph[57] = static_cast<char>(0xff);
  EXPECT_EQ(ParseElf(ph, ph.size()).status().code(), absl::StatusCode::kResourceExhausted);
  // A segment past the end of the file.
  EXPECT_EQ(ParseElf(good.substr(0, good.size() - 1), good.size() - 1).status().code(),
            absl::StatusCode::kDataLoss);
  // A shared library has PT_DYNAMIC without PT_INTERP: not static.
  SyntheticElf noint = e;
  noint.interp = "";
  std::string n = BuildElf(noint);
  auto lib = ParseElf(n, n.size());
  ASSERT_TRUE(lib.ok());
  EXPECT_FALSE(lib->is_static());
  EXPECT_FALSE(lib->interpreter.has_value());
}

}  // namespace
}  // namespace lazypull::elf
