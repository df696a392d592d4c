// SOCI zTOCs of real gzip tar layers (GNU tar + gzip over files of this machine): build,
// serialize, parse back, read every file and every span through the checkpoints, decode with
// flatc, and refuse corrupt or truncated input with clear errors.
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "fetcher/codec/gzip.h"
#include "fetcher/format/soci/span_inflater.h"
#include "fetcher/format/soci/span_slices.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "fetcher/tar/tar_entry.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "nlohmann/json.hpp"
#include "tests/format/soci_test_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::soci {
namespace {

using lazypull::testing::ReadFile;
using lazypull::testing::RunShell;
using lazypull::testing::TempDir;
using lazypull::testing::WriteFile;
using testing::ReadSpan;
using testing::ReadUncompressed;

constexpr uint64_t kSpan = 128 << 10;

class SociZtocTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("lazypull-soci");
    auto layer = testing::MakeSampleLayer(*dir_);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = new testing::SampleLayer(*std::move(layer));
  }
  static void TearDownTestSuite() {
    delete layer_;
    delete dir_;
  }

  static absl::StatusOr<Ztoc> Build(const std::string& gz, uint64_t span = kSpan) {
    auto blob = NewStringBlobReader(gz);
    ZtocBuildOptions options;
    options.span_size = span;
    options.read_size = 5000;  // odd piece size: checkpoints must not depend on it
    return BuildZtoc(*blob, options);
  }

  static TempDir* dir_;
  static testing::SampleLayer* layer_;
};
TempDir* SociZtocTest::dir_ = nullptr;
testing::SampleLayer* SociZtocTest::layer_ = nullptr;

TEST_F(SociZtocTest, EverySpanInflatesToTheWholeDecompression) {
  auto ztoc = Build(layer_->gzip);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  ASSERT_GT(ztoc->span_count(), 8u);
  EXPECT_EQ(ztoc->compressed_archive_size, layer_->gzip.size());
  // gzip from stdin: a 10-byte header, checkpoint 0 right after it.
  EXPECT_EQ(ztoc->checkpoints.at(0).compressed_offset, 10u);
  EXPECT_EQ(ztoc->checkpoints.at(0).window, std::string(kWindowSize, '\0'));
  std::string all;
  for (size_t i = 0; i < ztoc->span_count(); ++i) {
    auto span = ReadSpan(*ztoc, layer_->gzip, i);
    ASSERT_TRUE(span.ok()) << "span " << i << ": " << span.status();
    EXPECT_EQ(ztoc->SpanUncompressedRange(i).offset, all.size());
    all += *span;
  }
  // GNU tar pads to a 10 KiB record; like soci, the zTOC's archive ends after the end marker.
  ASSERT_LE(all.size(), layer_->tar.size());
  EXPECT_EQ(all.size(), ztoc->uncompressed_archive_size);
  EXPECT_TRUE(all == layer_->tar.substr(0, all.size()));
  EXPECT_EQ(layer_->tar.find_first_not_of('\0', all.size()), std::string::npos);
}

TEST_F(SociZtocTest, FilesReadThroughSpansEqualTheSourceFiles) {
  auto ztoc = Build(layer_->gzip);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  std::map<std::string, const ZtocFile*> by_name;
  for (const ZtocFile& f : ztoc->files) by_name[tar::CleanEntryName(f.name)] = &f;
  size_t regular = 0;
  for (const auto& [name, f] : by_name) {
    const std::string path = layer_->src_dir + "/" + name;
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
    if (f->type == "reg") {
      ASSERT_TRUE(S_ISREG(st.st_mode)) << name;
      EXPECT_EQ(f->uncompressed_size, static_cast<uint64_t>(st.st_size)) << name;
      auto want = ReadFile(path);
      ASSERT_TRUE(want.ok());
      auto got =
          ReadUncompressed(*ztoc, layer_->gzip, f->uncompressed_offset, f->uncompressed_size);
      ASSERT_TRUE(got.ok()) << name << ": " << got.status();
      EXPECT_TRUE(*got == *want) << name;
      EXPECT_EQ(f->mode & 07777, st.st_mode & 07777) << name;
      EXPECT_EQ(f->mtime_sec, st.st_mtim.tv_sec) << name;
      ++regular;
    } else if (f->type == "dir") {
      EXPECT_TRUE(S_ISDIR(st.st_mode)) << name;
    } else if (f->type == "symlink") {
      EXPECT_EQ(f->linkname, "../inc/zlib.h");
    } else if (f->type == "hardlink") {
      // Sorted by name, bin/zlib-hard comes first and holds the data.
      EXPECT_EQ(name, "inc/zlib.h");
      EXPECT_EQ(tar::CleanEntryName(f->linkname), "bin/zlib-hard");
      EXPECT_EQ(f->uncompressed_size, 0u);
    }
  }
  EXPECT_GT(regular, 50u);
  EXPECT_TRUE(by_name.count(std::string(120, 'd') + "/file"));
  ASSERT_TRUE(by_name.count("empty"));
  // The xattr is there when this file system took it (tmpfs without user xattrs does not).
  auto xattrs = by_name["empty"]->Xattrs();
  if (!xattrs.empty()) {
    EXPECT_EQ(xattrs[0].first, "user.soci");
    EXPECT_EQ(xattrs[0].second, "yes");
  }
}

TEST_F(SociZtocTest, SlicesTileEveryFileWithinItsSpans) {
  auto ztoc = Build(layer_->gzip);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  size_t crossing = 0;
  for (const ZtocFile& f : ztoc->files) {
    const auto slices = SlicesForRange(*ztoc, f.uncompressed_offset, f.uncompressed_size);
    if (f.uncompressed_size == 0) {
      EXPECT_TRUE(slices.empty());
      continue;
    }
    ASSERT_FALSE(slices.empty()) << f.name;
    uint64_t covered = 0;
    for (const SpanSlice& s : slices) {
      EXPECT_EQ(s.range_offset, covered) << f.name;
      const ByteRange ur = ztoc->SpanUncompressedRange(s.span);
      EXPECT_LE(s.span_offset + s.length, ur.length) << f.name;
      EXPECT_EQ(ur.offset + s.span_offset, f.uncompressed_offset + s.range_offset) << f.name;
      covered += s.length;
    }
    EXPECT_EQ(covered, f.uncompressed_size) << f.name;
    if (slices.size() > 1) ++crossing;
  }
  EXPECT_GT(crossing, 0u);  // the binary spans several 128 KiB spans
  EXPECT_TRUE(SlicesForRange(*ztoc, ztoc->uncompressed_archive_size, 1).empty());
  EXPECT_TRUE(SlicesForRange(*ztoc, 0, ztoc->uncompressed_archive_size + 1).empty());
  EXPECT_EQ(SlicesForRange(*ztoc, 0, ztoc->uncompressed_archive_size).size(), ztoc->span_count());
}

TEST_F(SociZtocTest, SerializeParseRoundTrip) {
  auto ztoc = Build(layer_->gzip);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  auto bytes = SerializeZtoc(*ztoc);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto back = ParseZtoc(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version, "0.9");
  EXPECT_EQ(back->build_tool_identifier, "lazypull");
  EXPECT_EQ(back->compressed_archive_size, ztoc->compressed_archive_size);
  EXPECT_EQ(back->uncompressed_archive_size, ztoc->uncompressed_archive_size);
  EXPECT_EQ(back->span_digests, ztoc->span_digests);
  EXPECT_EQ(back->checkpoints.blob(), ztoc->checkpoints.blob());
  EXPECT_EQ(back->checkpoints.version(), ZinfoVersion::kV2);
  EXPECT_EQ(back->checkpoints.span_size(), kSpan);
  ASSERT_EQ(back->files.size(), ztoc->files.size());
  for (size_t i = 0; i < back->files.size(); ++i) {
    const ZtocFile& a = ztoc->files[i];
    const ZtocFile& b = back->files[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.uncompressed_offset, b.uncompressed_offset);
    EXPECT_EQ(a.uncompressed_size, b.uncompressed_size);
    EXPECT_EQ(a.linkname, b.linkname);
    EXPECT_EQ(a.mode, b.mode);
    EXPECT_EQ(a.uid, b.uid);
    EXPECT_EQ(a.gid, b.gid);
    EXPECT_EQ(a.uname, b.uname);
    EXPECT_EQ(a.mtime_sec, b.mtime_sec);
    EXPECT_EQ(a.mtime_nsec, b.mtime_nsec);
    EXPECT_EQ(a.pax_records, b.pax_records);
  }
  // Deterministic: the same layer gives the same bytes.
  auto again = Build(layer_->gzip);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*SerializeZtoc(*again), *bytes);
}

TEST_F(SociZtocTest, NamedGzipHeaderMovesCheckpointZero) {
  auto ztoc = Build(layer_->gzip_named);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  // FNAME "named.tar\0" after the 10 fixed bytes.
  EXPECT_EQ(ztoc->checkpoints.at(0).compressed_offset, 10u + sizeof("named.tar"));
  auto first = ReadSpan(*ztoc, layer_->gzip_named, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(*first == layer_->tar.substr(0, first->size()));
}

TEST_F(SociZtocTest, MultiMemberGzip) {
  // Three members split at odd places, as pigz-like tools make them.
  std::string gz;
  const std::string& tar = layer_->tar;
  const size_t cuts[] = {0, 777777, 1500001, tar.size()};
  for (int i = 0; i < 3; ++i) {
    auto member = codec::GzipCompress(tar.substr(cuts[i], cuts[i + 1] - cuts[i]), 6);
    ASSERT_TRUE(member.ok());
    gz += *member;
  }
  auto ztoc = Build(gz, 64 << 10);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  std::string all;
  for (size_t i = 0; i < ztoc->span_count(); ++i) {
    auto span = ReadSpan(*ztoc, gz, i);
    ASSERT_TRUE(span.ok()) << "span " << i << ": " << span.status();
    all += *span;
  }
  EXPECT_EQ(all.size(), ztoc->uncompressed_archive_size);
  EXPECT_TRUE(all == tar.substr(0, all.size()));
}

// ZtocBuildOptions::large_file_spans: a file at least that large gets checkpoints at the first
// block boundaries at or after its start and its end, so the small files before and after it
// have spans of their own, but for the rest of a deflate block (each at least
// CheckpointingInflater::kMinRequestedSpan: a.txt is 90000 bytes); every span
// still verifies and inflates, and every file reads back exactly. Off (0), a span larger than
// the layer has checkpoint 0 only, as soci makes it.
TEST_F(SociZtocTest, LargeFilesGetSpansOfTheirOwn) {
  TempDir dir("lazypull-soci-large");
  auto made = RunShell(fmt::format(
      "set -e; cd {0}; mkdir src; head -c 90000 /dev/urandom > src/a.txt; "
      "head -c 700000 /dev/urandom > src/big.bin; head -c 30000 /dev/urandom > src/z.txt; "
      "head -c 100000 /dev/urandom > src/zz.bin; "
      "tar --sort=name --format=gnu -C src -cf layer.tar a.txt big.bin z.txt zz.bin",
      dir.path()));
  ASSERT_TRUE(made.ok() && made->exit_code == 0) << (made.ok() ? made->output : "");
  auto tar = ReadFile(dir.path() + "/layer.tar");
  ASSERT_TRUE(tar.ok());
  auto gz = codec::GzipCompress(*tar, 6);
  ASSERT_TRUE(gz.ok());
  auto blob = NewStringBlobReader(*gz);
  ZtocBuildOptions options;
  options.span_size = 4 << 20;
  auto plain = BuildZtoc(*blob, options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->span_count(), 1u);

  options.large_file_spans = 256 << 10;  // big.bin only: zz.bin and the others are smaller
  auto ztoc = BuildZtoc(*NewStringBlobReader(*gz), options);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  ASSERT_EQ(ztoc->span_count(), 3u);
  const ZtocFile* big = nullptr;
  for (const ZtocFile& f : ztoc->files) {
    if (f.name == "big.bin") big = &f;
  }
  ASSERT_NE(big, nullptr);
  const uint64_t start = ztoc->checkpoints.at(1).uncompressed_offset;
  const uint64_t end = ztoc->checkpoints.at(2).uncompressed_offset;
  EXPECT_GE(start, big->uncompressed_offset);
  EXPECT_LT(start, big->uncompressed_offset + big->uncompressed_size);
  EXPECT_GE(end, big->uncompressed_offset + big->uncompressed_size);
  EXPECT_LT(end, ztoc->uncompressed_archive_size);
  std::string all;
  for (size_t i = 0; i < ztoc->span_count(); ++i) {
    auto span = ReadSpan(*ztoc, *gz, i);
    ASSERT_TRUE(span.ok()) << "span " << i << ": " << span.status();
    all += *span;
  }
  EXPECT_EQ(all.size(), ztoc->uncompressed_archive_size);
  EXPECT_TRUE(all == tar->substr(0, all.size()));
  for (const ZtocFile& f : ztoc->files) {
    auto want = ReadFile(dir.path() + "/src/" + f.name);
    ASSERT_TRUE(want.ok()) << f.name;
    auto got = ReadUncompressed(*ztoc, *gz, f.uncompressed_offset, f.uncompressed_size);
    ASSERT_TRUE(got.ok()) << f.name << ": " << got.status();
    EXPECT_TRUE(*got == *want) << f.name;
  }
  // The zTOC stays what the public schema and our parser read.
  auto bytes = SerializeZtoc(*ztoc);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto back = ParseZtoc(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->span_count(), 3u);
}

TEST_F(SociZtocTest, FlatcDecodesOurZtocWithTheSchema) {
  auto ztoc = Build(layer_->gzip, 1 << 20);
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  auto bytes = SerializeZtoc(*ztoc);
  ASSERT_TRUE(bytes.ok());
  TempDir out("lazypull-soci-flatc");
  ASSERT_TRUE(WriteFile(out.Sub("layer.ztoc"), *bytes).ok());
  const std::string schema = lazypull::testing::SourceDir() + "/fetcher/format/soci/ztoc.fbs";
  auto r = RunShell(fmt::format("flatc --json --strict-json --raw-binary -o {} {} -- {} 2>&1",
                                out.path(), schema, out.Sub("layer.ztoc")));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output;
  auto text = ReadFile(out.Sub("layer.json"));
  ASSERT_TRUE(text.ok()) << text.status();
  const auto j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["version"], "0.9");
  EXPECT_EQ(j["build_tool_identifier"], "lazypull");
  EXPECT_EQ(j["compressed_archive_size"].get<uint64_t>(), layer_->gzip.size());
  EXPECT_EQ(j["uncompressed_archive_size"].get<uint64_t>(), ztoc->uncompressed_archive_size);
  const auto& info = j["compression_info"];
  // Gzip is the default value: absent from the buffer, hence from the JSON, or named.
  if (info.contains("compression_algorithm")) {
    EXPECT_EQ(info["compression_algorithm"], "Gzip");
  }
  EXPECT_EQ(info["max_span_id"].get<int64_t>() + 1, static_cast<int64_t>(ztoc->span_count()));
  ASSERT_EQ(info["span_digests"].size(), ztoc->span_count());
  EXPECT_EQ(info["span_digests"][0], ztoc->span_digests[0].ToString());
  EXPECT_EQ(info["checkpoints"].size(), ztoc->checkpoints.blob().size());
  const auto& md = j["toc"]["metadata"];
  ASSERT_EQ(md.size(), ztoc->files.size());
  for (size_t i = 0; i < md.size(); ++i) {
    const ZtocFile& f = ztoc->files[i];
    EXPECT_EQ(md[i]["name"], f.name);
    EXPECT_EQ(md[i]["type"], f.type);
    EXPECT_EQ(md[i].value("uncompressed_offset", uint64_t{0}), f.uncompressed_offset);
    EXPECT_EQ(md[i].value("uncompressed_size", uint64_t{0}), f.uncompressed_size);
    EXPECT_EQ(md[i].value("mode", int64_t{0}), f.mode);
  }
}

TEST_F(SociZtocTest, V1CheckpointBlobImpliesCheckpointZero) {
  auto ztoc = Build(layer_->gzip);
  ASSERT_TRUE(ztoc.ok());
  // v1 = the v2 blob without record 0 (valid here: header of 10 bytes, zero window).
  std::string v1 = ztoc->checkpoints.blob().substr(0, kZinfoHeaderSize) +
                   ztoc->checkpoints.blob().substr(kZinfoHeaderSize + kCheckpointRecordSize);
  auto parsed = ZinfoCheckpoints::Parse(v1, 1000);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->version(), ZinfoVersion::kV1);
  ASSERT_EQ(parsed->size(), ztoc->checkpoints.size());
  for (size_t i = 0; i < parsed->size(); ++i) {
    const Checkpoint a = parsed->at(i), b = ztoc->checkpoints.at(i);
    EXPECT_EQ(a.compressed_offset, b.compressed_offset) << i;
    EXPECT_EQ(a.uncompressed_offset, b.uncompressed_offset) << i;
    EXPECT_EQ(a.bits, b.bits) << i;
    EXPECT_TRUE(a.window == b.window) << i;
  }
  // A zTOC with the v1 blob reads the same bytes.
  Ztoc z1 = *ztoc;
  z1.checkpoints = *std::move(parsed);
  auto span = ReadSpan(z1, layer_->gzip, 0);
  ASSERT_TRUE(span.ok()) << span.status();
  EXPECT_TRUE(*span == layer_->tar.substr(0, span->size()));
}

}  // namespace
}  // namespace lazypull::soci
