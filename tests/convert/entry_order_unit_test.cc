// Unit tests of the prioritized-entry ordering both writers share, of the zstd:chunked
// writer's reordering and of the prefetch-range annotation as the reader parses it.
#include <string>
#include <vector>

#include "fetcher/codec/zstd.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/entry_order.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fetcher/tar/tar_header_writer.h"
#include "fetcher/tar/tar_scanner.h"
#include "gtest/gtest.h"

namespace lazypull::testing {
namespace {

using tar::EntryType;
using tar::TarEntry;

TarEntry Entry(std::string name, EntryType type = EntryType::kRegular, std::string link = "") {
  TarEntry e;
  e.name = std::move(name);
  e.type = type;
  e.linkname = std::move(link);
  return e;
}

std::vector<std::string> Names(const std::vector<TarEntry>& entries,
                               const std::vector<size_t>& order) {
  std::vector<std::string> out;
  for (size_t i : order) out.push_back(entries[i].name);
  return out;
}

TEST(EntryOrderTest, ParentsAndHardlinkTargetsComeFirstThenTheRestInStreamOrder) {
  std::vector<TarEntry> e = {
      Entry("./", EntryType::kDirectory),
      Entry("./bin/", EntryType::kDirectory),
      Entry("./bin/sh"),
      Entry("./etc/", EntryType::kDirectory),
      Entry("./etc/a.conf"),
      Entry("./lib/", EntryType::kDirectory),
      Entry("./lib/real.so"),
      Entry("./lib/link.so", EntryType::kHardlink, "lib/real.so"),
      Entry("./z"),
  };
  convert::EntryOrder o = convert::OrderEntries(
      e, {.prioritized = {"/lib/link.so", "etc/a.conf", "/nope", "etc"}, .drop_names = {}});
  EXPECT_EQ(Names(e, o.prioritized),
            (std::vector<std::string>{"./", "./lib/", "./lib/real.so", "./lib/link.so", "./etc/",
                                      "./etc/a.conf"}));
  EXPECT_EQ(Names(e, o.rest), (std::vector<std::string>{"./bin/", "./bin/sh", "./z"}));
  EXPECT_EQ(o.missing, std::vector<std::string>{"/nope"});
}

TEST(EntryOrderTest, LastEntryOfANameWinsAndDropNamesAreDropped) {
  std::vector<TarEntry> e = {
      Entry("a"),
      Entry("stargz.index.json"),
      Entry("b"),
      Entry("./a"),
      Entry("pax", EntryType::kGlobalHeader),
  };
  convert::EntryOrder o =
      convert::OrderEntries(e, {.prioritized = {"a"}, .drop_names = {"stargz.index.json"}});
  EXPECT_EQ(o.prioritized, std::vector<size_t>{3});
  EXPECT_EQ(o.rest, (std::vector<size_t>{2, 4}));
  // Without a list every last-of-its-name entry stays in stream order.
  o = convert::OrderEntries(e, {.prioritized = {}, .drop_names = {}});
  EXPECT_TRUE(o.prioritized.empty());
  EXPECT_EQ(o.rest, (std::vector<size_t>{1, 2, 3, 4}));
}

TEST(EntryOrderTest, HardlinkCyclesAndDuplicatesTerminate) {
  std::vector<TarEntry> e = {
      Entry("x", EntryType::kHardlink, "y"),
      Entry("y", EntryType::kHardlink, "x"),
  };
  convert::EntryOrder o =
      convert::OrderEntries(e, {.prioritized = {"x", "x", "y"}, .drop_names = {}});
  EXPECT_EQ(o.prioritized, (std::vector<size_t>{1, 0}));
  EXPECT_TRUE(o.rest.empty());
  EXPECT_TRUE(o.missing.empty());
}

// A ustar stream of `files` (name, content), in this order.
std::string MakeTar(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string t;
  for (const auto& [name, data] : files) {
    t += *tar::RegularFileHeader(name, data.size());
    t += data;
    t += std::string(tar::PadToBlock(data.size()) - data.size(), '\0');
  }
  return t + tar::EndOfArchive();
}

struct Written {
  std::string blob;
  convert::ZstdChunkedResult result;
};
Written WriteZstd(const std::string& tar, std::vector<std::string> prioritized) {
  auto reader = NewStringBlobReader(tar);
  auto index = tar::ScanTar(*reader);
  EXPECT_TRUE(index.ok()) << index.status();
  convert::ZstdChunkedOptions options;
  options.prioritized_files = std::move(prioritized);
  Written w;
  auto sink = convert::NewStringBlobSink(&w.blob);
  auto r = convert::WriteZstdChunked(*reader, *index, options, *sink);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) w.result = *r;
  return w;
}

TEST(ZstdChunkedPrioritizedTest, ReorderedBlobCarriesAnExactPrefetchRange) {
  std::string big(300000, 'b');
  for (size_t i = 0; i < big.size(); i += 7) big[i] = static_cast<char>(i);
  const std::string tar =
      MakeTar({{"a.txt", "old a\n"}, {"big", big}, {"etc/c.conf", "c\n"}, {"a.txt", "new a\n"}});

  // A list that matches nothing changes nothing: byte-identical to no list.
  Written plain = WriteZstd(tar, {});
  Written unmatched = WriteZstd(tar, {"/not/here"});
  EXPECT_EQ(plain.blob, unmatched.blob);
  EXPECT_FALSE(unmatched.result.reordered);
  EXPECT_EQ(unmatched.result.missing_prioritized_files, std::vector<std::string>{"/not/here"});
  EXPECT_EQ(plain.result.diff_id, Digest::Of(tar));
  EXPECT_FALSE(plain.result.Annotations().count(convert::kLazypullPrefetchRangeAnnotation));

  Written w = WriteZstd(tar, {"/etc/c.conf", "a.txt"});
  ASSERT_TRUE(w.result.reordered);
  EXPECT_NE(w.result.diff_id, Digest::Of(tar));
  auto ann = w.result.Annotations();
  ASSERT_EQ(ann.count(convert::kLazypullPrefetchRangeAnnotation), 1u);
  EXPECT_EQ(ann[convert::kLazypullPrefetchRangeAnnotation],
            "0:" + std::to_string(w.result.prefetch_length));
  EXPECT_EQ(std::string(format::kLazypullPrefetchRangeKey),
            convert::kLazypullPrefetchRangeAnnotation);

  auto blob = NewStringBlobReader(w.blob);
  auto index = format::ReadZstdChunkedIndex(*blob, ann);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_TRUE(index->prefetch_range().has_value());
  EXPECT_EQ(index->prefetch_range()->offset, 0u);
  EXPECT_EQ(index->prefetch_range()->length, w.result.prefetch_length);
  const uint64_t end = w.result.prefetch_length;
  for (const char* path : {"etc/c.conf", "a.txt"}) {
    for (const format::Chunk& c : index->Chunks(*index->LookupPath(path))) {
      EXPECT_LE(c.compressed_offset + c.compressed_length, end) << path;
    }
  }
  for (const format::Chunk& c : index->Chunks(*index->LookupPath("big"))) {
    EXPECT_GE(c.compressed_offset, end);
  }
  // Only the last "a.txt" survives, and it comes first with the other prioritized file.
  auto plain_tar = NewStringBlobReader(*codec::ZstdDecompress(w.blob));
  auto reordered = tar::ScanTar(*plain_tar);
  ASSERT_TRUE(reordered.ok());
  std::vector<std::string> names;
  for (const TarEntry& e : reordered->entries) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"etc/c.conf", "a.txt", "big"}));
}

TEST(ZstdChunkedPrioritizedTest, PrefetchAnnotationIsParsedAndChecked) {
  using Ann = std::map<std::string, std::string>;
  const std::string key(format::kLazypullPrefetchRangeKey);
  auto none = format::PrefetchRangeFromAnnotations({});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto ok = format::PrefetchRangeFromAnnotations(Ann{{key, "10:20"}});
  ASSERT_TRUE(ok.ok() && ok->has_value());
  EXPECT_EQ((*ok)->offset, 10u);
  EXPECT_EQ((*ok)->length, 20u);
  for (const char* bad :
       {"", "10", "1:2:3", "x:5", "5:", "-1:5", "0:0", "18446744073709551615:2"}) {
    auto st = format::PrefetchRangeFromAnnotations(Ann{{key, bad}}).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find(key), std::string::npos) << st;
  }

  // A range past the data area (into the manifest frame) refuses the layer.
  Written w = WriteZstd(MakeTar({{"f", "data\n"}, {"g", "more\n"}}), {"g"});
  auto ann = w.result.Annotations();
  auto blob = NewStringBlobReader(w.blob);
  ann[key] = "0:" + std::to_string(w.result.manifest_offset);
  auto st = format::ReadZstdChunkedIndex(*blob, ann).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find(key), std::string::npos) << st;
  ann[key] = "garbage";
  EXPECT_EQ(format::ReadZstdChunkedIndex(*blob, ann).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::testing
