// Unit tests of the tar scanner and the small fixed formats the writers emit.
#include <string>

#include "fetcher/convert/estargz_writer.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/tar/tar_entry.h"
#include "fetcher/tar/tar_header_writer.h"
#include "fetcher/tar/tar_scanner.h"
#include "gtest/gtest.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

absl::StatusOr<tar::TarIndex> ScanFile(const std::string& path) {
  auto reader = NewFileBlobReader(path);
  if (!reader.ok()) return reader.status();
  return tar::ScanTar(**reader);
}

TEST(TarScannerTest, ReadsPaxAndGnuLongNamesAndTypes) {
  TempDir dir;
  std::string long_name(180, 'n');
  auto r = RunShell("set -e; cd " + dir.path() + " && mkdir -p src/d && printf abc > src/d/" +
                    long_name + " && ln -s d src/link && mkfifo src/fifo && " +
                    "tar --format=posix -C src -cf pax.tar . && tar --format=gnu -C src -cf "
                    "gnu.tar .");
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << r->output;
  for (const char* name : {"pax.tar", "gnu.tar"}) {
    auto index = ScanFile(dir.Sub(name));
    ASSERT_TRUE(index.ok()) << index.status();
    std::map<std::string, const tar::TarEntry*> by_name;
    for (const auto& e : index->entries) by_name[tar::CleanEntryName(e.name)] = &e;
    ASSERT_TRUE(by_name.count("d/" + long_name)) << name;
    const tar::TarEntry& f = *by_name["d/" + long_name];
    EXPECT_EQ(f.type, tar::EntryType::kRegular);
    EXPECT_EQ(f.payload_size, 3u);
    EXPECT_EQ(f.payload_offset % 512, 0u);
    EXPECT_EQ(by_name["link"]->type, tar::EntryType::kSymlink);
    EXPECT_EQ(by_name["link"]->linkname, "d");
    EXPECT_EQ(by_name["fifo"]->type, tar::EntryType::kFifo);
    EXPECT_EQ(by_name["d"]->type, tar::EntryType::kDirectory);
    EXPECT_LT(index->trailer_offset, index->stream_size);
  }
}

TEST(TarScannerTest, SparseEntriesAreUnimplemented) {
  TempDir dir;
  auto r = RunShell("set -e; cd " + dir.path() + " && truncate -s 1M s && printf x >> s && " +
                    "tar --sparse --format=gnu -cf gnu.tar s && " +
                    "tar --sparse --format=posix -cf pax.tar s");
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << r->output;
  EXPECT_EQ(ScanFile(dir.Sub("gnu.tar")).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ScanFile(dir.Sub("pax.tar")).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(TarScannerTest, TruncatedAndCorruptStreamsAreDataLoss) {
  auto header = tar::RegularFileHeader("file", 1000);
  ASSERT_TRUE(header.ok());
  auto truncated = NewStringBlobReader(*header + std::string(100, 'x'));
  EXPECT_EQ(tar::ScanTar(*truncated).status().code(), absl::StatusCode::kDataLoss);
  std::string bad = *header;
  bad[0] = 'g';  // checksum no longer matches
  auto corrupt = NewStringBlobReader(bad + std::string(1024, 'x'));
  EXPECT_EQ(tar::ScanTar(*corrupt).status().code(), absl::StatusCode::kDataLoss);
  auto empty = NewStringBlobReader(tar::EndOfArchive());
  auto index = tar::ScanTar(*empty);
  ASSERT_TRUE(index.ok());
  EXPECT_TRUE(index->entries.empty());
  EXPECT_EQ(index->trailer_offset, 0u);
}

TEST(TarEntryTest, CleanEntryName) {
  EXPECT_EQ(tar::CleanEntryName("./a/b/"), "a/b");
  EXPECT_EQ(tar::CleanEntryName("/a/../b"), "b");
  EXPECT_EQ(tar::CleanEntryName("../../etc/passwd"), "etc/passwd");
  EXPECT_EQ(tar::CleanEntryName("./"), "");
}

TEST(WriterFormatsTest, EstargzFooterIsTheReferenceLayout) {
  std::string f = convert::EstargzFooter(0x1234abcd);
  ASSERT_EQ(f.size(), convert::kEstargzFooterSize);
  EXPECT_EQ(f.substr(0, 4), std::string("\x1f\x8b\x08\x04", 4));
  EXPECT_EQ(f.substr(10, 2), std::string("\x1a\x00", 2));
  EXPECT_EQ(f.substr(12, 4), std::string("SG\x16\x00", 4));
  EXPECT_EQ(f.substr(16, 22), "000000001234abcdSTARGZ");
  // It is an empty gzip member: gzip accepts it and yields nothing.
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.Sub("f.gz"), f).ok());
  auto r = RunShell("gzip -dc < " + dir.Sub("f.gz") + " | wc -c");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, "0\n");
}

TEST(WriterFormatsTest, ZstdChunkedFooterAndCrc64) {
  convert::ZstdChunkedResult r;
  r.manifest_offset = 1;
  r.manifest_length = 2;
  r.manifest_uncompressed_length = 3;
  r.tarsplit_offset = 4;
  r.tarsplit_length = 5;
  r.tarsplit_uncompressed_length = 6;
  std::string f = convert::ZstdChunkedFooter(r);
  ASSERT_EQ(f.size(), convert::kZstdChunkedFooterSize);
  EXPECT_EQ(f.substr(56), "GNUlInUx");
  EXPECT_EQ(f[0], 1);
  EXPECT_EQ(f[24], 1);  // manifest type
  EXPECT_EQ(f[48], 6);
  EXPECT_EQ(r.Annotations().at(convert::kZstdChunkedManifestPositionAnnotation), "1:2:3:1");
  EXPECT_EQ(r.Annotations().at(convert::kZstdChunkedTarSplitPositionAnnotation), "4:5:6");
  // CRC-64/GO-ISO check value, as Go's hash/crc64 ISO table (tar-split payload checksums).
  EXPECT_EQ(convert::Crc64Iso(0, "123456789"), 0xb90956c775a41001ull);
}

}  // namespace
}  // namespace lazypull::testing
