// Round trip of the converter on a real tree with every entry type: convert a layer to
// eStargz / zstd:chunked, read it back through fetcher/format's LayerIndex, extract it with
// plain tar / zstd, and check it against the reference Go eStargz implementation.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "fetcher/convert/image_converter.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "lazypull/digest.h"
#include "tests/convert/convert_test_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull::testing {
namespace {

// Built once for the whole binary: the source tree, its tar (PAX and GNU forms) and the Go
// reference tool.
class ConvertRoundTripTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new TempDir("lazypull-convert-rt");
    src_ = shared_->Sub("src");
    ASSERT_TRUE(MakeSourceTree(src_).ok());
    auto snap = SnapshotDir(src_);
    ASSERT_TRUE(snap.ok()) << snap.status();
    source_ = new TreeSnapshot(std::move(*snap));
    ASSERT_GT(source_->size(), 3000u);
    ASSERT_TRUE(MakeTar(src_, shared_->Sub("layer-posix.tar"), "posix").ok());
    ASSERT_TRUE(MakeTar(src_, shared_->Sub("layer-gnu.tar"), "gnu").ok());
    auto r = RunShell("gzip -c " + shared_->Sub("layer-posix.tar") + " > " +
                      shared_->Sub("layer-posix.tar.gz") + " && zstd -q -c " +
                      shared_->Sub("layer-gnu.tar") + " > " + shared_->Sub("layer-gnu.tar.zst"));
    ASSERT_TRUE(r.ok() && r->exit_code == 0);
  }
  static void TearDownTestSuite() {
    delete source_;
    delete shared_;
  }

  struct Converted {
    convert::ConvertedLayer layer;
    std::string path;
  };

  Converted Convert(const std::string& input, convert::LayerFormat format,
                    convert::ConvertOptions options = {}) {
    options.format = format;
    auto reader = NewFileBlobReader(input);
    EXPECT_TRUE(reader.ok());
    std::string out = dir_.Sub(format == convert::LayerFormat::kEstargz ? "out.esgz" : "out.zst");
    auto layer = convert::ConvertLayerFile(**reader, oci::Descriptor{}, options, dir_.path(), out);
    EXPECT_TRUE(layer.ok()) << layer.status();
    return {layer.ok() ? *layer : convert::ConvertedLayer{}, out};
  }

  absl::StatusOr<format::LayerIndex> ReadIndex(const Converted& c) {
    auto blob = NewFileBlobReader(c.path);
    if (!blob.ok()) return blob.status();
    const auto& ann = c.layer.converted.annotations;
    if (c.layer.converted.media_type == "application/vnd.oci.image.layer.v1.tar+zstd") {
      return format::ReadZstdChunkedIndex(**blob, ann);
    }
    auto digest = Digest::Parse(ann.at(convert::kEstargzTocDigestAnnotation));
    if (!digest.ok()) return digest.status();
    return format::ReadEstargzIndex(**blob, *digest);
  }

  void ExpectIndexMatchesSource(const Converted& c) {
    auto index = ReadIndex(c);
    ASSERT_TRUE(index.ok()) << index.status();
    auto blob = NewFileBlobReader(c.path);
    ASSERT_TRUE(blob.ok());
    auto snap = SnapshotIndex(*index, **blob);
    ASSERT_TRUE(snap.ok()) << snap.status();
    EXPECT_EQ(DiffSnapshots(*source_, *snap, true), "");
  }

  // Extracts the converted blob with `command` (reading the blob on stdin) and compares.
  // Directory times are set at the end, as containerd's unpacker does: a prioritized file
  // written before the rest of its directory would otherwise let GNU tar stamp the directory
  // too early.
  void ExpectPlainExtractMatchesSource(const Converted& c, const std::string& decompress) {
    std::string x = dir_.Sub("extract");
    auto r = RunShell(
        "mkdir -p " + x + " && " + decompress + " < " + c.path +
        " | tar --xattrs --xattrs-include='*' --numeric-owner -p --delay-directory-restore -x -C " +
        x);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->exit_code, 0) << r->output;
    auto snap = SnapshotDir(
        x, {convert::kNoPrefetchLandmark, convert::kPrefetchLandmark, convert::kEstargzTocName});
    ASSERT_TRUE(snap.ok()) << snap.status();
    EXPECT_EQ(DiffSnapshots(*source_, *snap, true), "");
  }

  static Digest DigestOfFile(const std::string& path) {
    auto data = ReadFile(path);
    EXPECT_TRUE(data.ok());
    return Digest::Of(*data);
  }

  static TempDir* shared_;
  static std::string src_;
  static TreeSnapshot* source_;
  TempDir dir_{"lazypull-convert-case"};
};

TempDir* ConvertRoundTripTest::shared_ = nullptr;
std::string ConvertRoundTripTest::src_;
TreeSnapshot* ConvertRoundTripTest::source_ = nullptr;

TEST_F(ConvertRoundTripTest, EstargzFromGzipReadsBackIdentically) {
  Converted c = Convert(shared_->Sub("layer-posix.tar.gz"), convert::LayerFormat::kEstargz);
  EXPECT_EQ(c.layer.source_diff_id, DigestOfFile(shared_->Sub("layer-posix.tar")));
  EXPECT_EQ(c.layer.converted.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_EQ(c.layer.converted.digest, DigestOfFile(c.path));
  // eStargz adds the landmark and TOC entries: the DiffID changes.
  EXPECT_NE(c.layer.converted_diff_id, c.layer.source_diff_id);
  auto plain = RunShell("gzip -dc < " + c.path + " | sha256sum | cut -d' ' -f1");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->output, c.layer.converted_diff_id.hex() + "\n");
  EXPECT_EQ(c.layer.converted.annotations.at(convert::kEstargzUncompressedSizeAnnotation),
            std::to_string(std::stoull(RunShell("gzip -dc < " + c.path + " | wc -c")->output)));
  ExpectIndexMatchesSource(c);
  ExpectPlainExtractMatchesSource(c, "gzip -dc");
}

TEST_F(ConvertRoundTripTest, ZstdChunkedFromZstdKeepsDiffIdAndReadsBack) {
  Converted c = Convert(shared_->Sub("layer-gnu.tar.zst"), convert::LayerFormat::kZstdChunked);
  EXPECT_EQ(c.layer.source_diff_id, DigestOfFile(shared_->Sub("layer-gnu.tar")));
  EXPECT_EQ(c.layer.converted_diff_id, c.layer.source_diff_id);
  EXPECT_EQ(c.layer.converted.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
  auto plain = RunShell("zstd -dc < " + c.path + " | sha256sum | cut -d' ' -f1");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->output, c.layer.source_diff_id.hex() + "\n");
  ExpectIndexMatchesSource(c);
  ExpectPlainExtractMatchesSource(c, "zstd -dc");
}

TEST_F(ConvertRoundTripTest, ZstdChunkedFromPlainTarMarksHolesAsZeros) {
  Converted c = Convert(shared_->Sub("layer-posix.tar"), convert::LayerFormat::kZstdChunked);
  EXPECT_EQ(c.layer.converted_diff_id, DigestOfFile(shared_->Sub("layer-posix.tar")));
  auto index = ReadIndex(c);
  ASSERT_TRUE(index.ok()) << index.status();
  auto ino = index->LookupPath("special/sparse.img");
  ASSERT_TRUE(ino.has_value());
  uint64_t zero_bytes = 0;
  for (const auto& chunk : index->Chunks(*ino)) {
    if (chunk.compression == format::ChunkCompression::kZeros) zero_bytes += chunk.length;
  }
  // 16 MiB with two 10-byte islands: nearly all of it is hole chunks.
  EXPECT_GT(zero_bytes, 15ull << 20);
  // The compressed blob stays far below the tar size thanks to per-chunk compression.
  ExpectIndexMatchesSource(c);
}

TEST_F(ConvertRoundTripTest, EstargzFromGnuTarWithSmallChunks) {
  convert::ConvertOptions options;
  options.estargz.chunk_size = 1 << 20;
  Converted c = Convert(shared_->Sub("layer-gnu.tar"), convert::LayerFormat::kEstargz, options);
  auto index = ReadIndex(c);
  ASSERT_TRUE(index.ok()) << index.status();
  auto ino = index->LookupPath("special/big.bin");
  ASSERT_TRUE(ino.has_value());
  EXPECT_EQ(index->Chunks(*ino).size(), 9u);  // 9 MiB in 1 MiB chunks
  ExpectIndexMatchesSource(c);
  ExpectPlainExtractMatchesSource(c, "gzip -dc");
}

TEST_F(ConvertRoundTripTest, PrioritizedFilesComeFirstBeforePrefetchLandmark) {
  convert::ConvertOptions options;
  options.estargz.prioritized_files = {"/special/small.txt", "special/sub dir/hard2",
                                       "/not/in/layer"};
  Converted c = Convert(shared_->Sub("layer-posix.tar"), convert::LayerFormat::kEstargz, options);
  auto index = ReadIndex(c);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_TRUE(index->prefetch_range().has_value());
  EXPECT_FALSE(index->has_no_prefetch_landmark());
  // small.txt (hard2's target) lies inside the prefetch range; the big file does not.
  auto small = index->LookupPath("special/small.txt");
  auto big = index->LookupPath("special/big.bin");
  ASSERT_TRUE(small && big);
  EXPECT_LT(index->Chunks(*small)[0].compressed_offset, index->prefetch_range()->end());
  EXPECT_GE(index->Chunks(*big)[0].compressed_offset, index->prefetch_range()->end());
  // The tar stream starts with the prioritized entries (parents and hardlink targets
  // first; which of small.txt/hard2 is the link depends on GNU tar's walk), then the landmark.
  auto listing = RunShell("gzip -dc < " + c.path + " | tar -t | head -6");
  ASSERT_TRUE(listing.ok());
  std::vector<std::string> lines = absl::StrSplit(listing->output, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 6u) << listing->output;
  EXPECT_EQ(lines[0], "./");
  EXPECT_EQ(lines[1], "./special/");
  EXPECT_EQ(lines[5], ".prefetch.landmark");
  std::set<std::string> middle(lines.begin() + 2, lines.begin() + 5);
  EXPECT_EQ(middle, (std::set<std::string>{"./special/small.txt", "./special/sub dir/",
                                           "./special/sub dir/hard2"}));
  ExpectIndexMatchesSource(c);
}

// zstd:chunked with files recorded for this layer (ConvertOptions::prioritized_by_layer):
// they come first, the tar is reordered (new DiffID) and the prefetch-range annotation covers
// exactly their frames; the tree is unchanged.
TEST_F(ConvertRoundTripTest, ZstdChunkedPrioritizedFilesComeFirstWithPrefetchRange) {
  convert::ConvertOptions options;
  options.format = convert::LayerFormat::kZstdChunked;
  oci::Descriptor source;
  source.digest = DigestOfFile(shared_->Sub("layer-posix.tar"));
  options.prioritized_by_layer[source.digest.ToString()] = {"/special/small.txt",
                                                            "special/sub dir/hard2"};
  options.prioritized_by_layer["sha256:" + std::string(64, '0')] = {"special/big.bin"};
  auto reader = NewFileBlobReader(shared_->Sub("layer-posix.tar"));
  ASSERT_TRUE(reader.ok());
  Converted c{{}, dir_.Sub("out.zst")};
  auto layer = convert::ConvertLayerFile(**reader, source, options, dir_.path(), c.path);
  ASSERT_TRUE(layer.ok()) << layer.status();
  c.layer = *layer;
  EXPECT_NE(c.layer.converted_diff_id, c.layer.source_diff_id);
  auto plain = RunShell("zstd -dc < " + c.path + " | sha256sum | cut -d' ' -f1");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->output, c.layer.converted_diff_id.hex() + "\n");
  const std::string range =
      c.layer.converted.annotations.at(convert::kLazypullPrefetchRangeAnnotation);
  auto index = ReadIndex(c);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_TRUE(index->prefetch_range().has_value());
  EXPECT_EQ(range, fmt::format("0:{}", index->prefetch_range()->length));
  const uint64_t end = index->prefetch_range()->end();
  auto small = index->LookupPath("special/small.txt");
  ASSERT_TRUE(small.has_value());
  for (const auto& chunk : index->Chunks(*small)) {
    EXPECT_LE(chunk.compressed_offset + chunk.compressed_length, end);
  }
  // Every other file's data lies after the range (big.bin was listed for another layer).
  size_t after = 0;
  for (format::Ino ino = 1; ino <= index->inode_count(); ++ino) {
    if (ino == *small) continue;
    for (const auto& chunk : index->Chunks(ino)) {
      if (chunk.compression == format::ChunkCompression::kZeros) continue;
      EXPECT_GE(chunk.compressed_offset, end) << ino;
      ++after;
    }
  }
  EXPECT_GT(after, 3000u);
  auto listing = RunShell("zstd -dc < " + c.path + " | tar -t | head -5");
  ASSERT_TRUE(listing.ok());
  std::vector<std::string> lines = absl::StrSplit(listing->output, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << listing->output;
  EXPECT_EQ(lines[0], "./");
  EXPECT_EQ(lines[1], "./special/");
  std::set<std::string> rest(lines.begin() + 2, lines.end());
  EXPECT_EQ(rest, (std::set<std::string>{"./special/small.txt", "./special/sub dir/",
                                         "./special/sub dir/hard2"}));
  ExpectIndexMatchesSource(c);
  ExpectPlainExtractMatchesSource(c, "zstd -dc");
}

TEST_F(ConvertRoundTripTest, ReferenceVerifierAcceptsOurEstargz) {
  auto tool = BuildEstargzRef(shared_->path());
  ASSERT_TRUE(tool.ok()) << tool.status();
  Converted c = Convert(shared_->Sub("layer-posix.tar.gz"), convert::LayerFormat::kEstargz);
  auto r = RunCommand({*tool, "verify", c.path,
                       c.layer.converted.annotations.at(convert::kEstargzTocDigestAnnotation)},
                      std::chrono::seconds(300));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output.substr(0, 2000);
  // One line per regular file name (hardlinks included) plus the landmark.
  std::map<std::string, std::string> want;
  for (const auto& [path, f] : *source_) {
    if (S_ISREG(f.mode)) want[path] = fmt::format("{}\t{}\t{}", path, f.size, f.content_sha256);
  }
  want[".no.prefetch.landmark"] = ".no.prefetch.landmark\t1\t" + Digest::Of("\x0f").hex();
  std::string expected;
  for (const auto& [p, line] : want) expected += line + "\n";
  // The tool sorts lines bytewise, as std::map does.
  EXPECT_EQ(r->output, expected);
}

TEST_F(ConvertRoundTripTest, ReferenceBuiltEstargzIsReadByOurReader) {
  auto tool = BuildEstargzRef(shared_->path());
  ASSERT_TRUE(tool.ok()) << tool.status();
  std::string out = dir_.Sub("ref.esgz");
  auto r =
      RunCommand({*tool, "build", shared_->Sub("layer-posix.tar"), out}, std::chrono::seconds(300));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output;
  std::string toc_digest = r->output.substr(0, r->output.find(' '));
  auto blob = NewFileBlobReader(out);
  ASSERT_TRUE(blob.ok());
  auto digest = Digest::Parse(toc_digest);
  ASSERT_TRUE(digest.ok()) << toc_digest;
  auto index = format::ReadEstargzIndex(**blob, *digest);
  ASSERT_TRUE(index.ok()) << index.status();
  auto snap = SnapshotIndex(*index, **blob);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(DiffSnapshots(*source_, *snap, true), "");
}

TEST_F(ConvertRoundTripTest, BadInputIsAClearError) {
  std::string bad = dir_.Sub("bad.tar");
  auto data = ReadFile(shared_->Sub("layer-posix.tar"));
  ASSERT_TRUE(data.ok());
  std::string corrupt = data->substr(0, 4096);
  corrupt[150] ^= 0x55;  // header checksum field of the first entry
  ASSERT_TRUE(WriteFile(bad, corrupt).ok());
  auto reader = NewFileBlobReader(bad);
  ASSERT_TRUE(reader.ok());
  convert::ConvertOptions options;
  auto layer = convert::ConvertLayerFile(**reader, oci::Descriptor{}, options, dir_.path(),
                                         dir_.Sub("bad.out"));
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kDataLoss) << layer.status();
  // Truncated gzip input.
  auto gz = ReadFile(shared_->Sub("layer-posix.tar.gz"));
  ASSERT_TRUE(gz.ok());
  ASSERT_TRUE(WriteFile(bad, gz->substr(0, gz->size() / 2)).ok());
  auto reader2 = NewFileBlobReader(bad);
  ASSERT_TRUE(reader2.ok());
  layer = convert::ConvertLayerFile(**reader2, oci::Descriptor{}, options, dir_.path(),
                                    dir_.Sub("bad.out"));
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kDataLoss) << layer.status();
}

}  // namespace
}  // namespace lazypull::testing
