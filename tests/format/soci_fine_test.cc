// lazypull's fine SOCI index (fine_index.h) of a real gzip tar layer: writer -> parser round
// trip, every fine span digest and window sha256 checked, files read through the fine index
// equal the source files, and corrupt windows, spans and fine blobs give clear errors, never
// wrong bytes.
#include <sys/stat.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/chunk_decoder.h"
#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/fine_windows.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/tar/tar_scanner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"
#include "tests/format/soci_test_util.h"
#include "tests/harness/test_env.h"

namespace lazypull::soci {
namespace {

using lazypull::testing::ReadFile;
using lazypull::testing::TempDir;
using ::testing::HasSubstr;

constexpr uint64_t kFineSpan = 64 << 10;

// Counts the requests that reach it (to see the windows' readahead and cache at work).
class CountingReader : public BlobReader {
 public:
  explicit CountingReader(std::string data) : inner_(NewStringBlobReader(std::move(data))) {}
  uint64_t Size() const override { return inner_->Size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    ++reads;
    return inner_->ReadAt(offset, length);
  }
  absl::Status StreamRanges(std::span<const ByteRange> ranges, const Sink& sink) override {
    ++reads;  // one request, however many ranges
    return inner_->StreamRanges(ranges, sink);
  }
  std::atomic<int> reads{0};

 private:
  std::unique_ptr<BlobReader> inner_;
};

class SociFineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("lazypull-soci-fine");
    auto layer = testing::MakeSampleLayer(*dir_);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = new testing::SampleLayer(*std::move(layer));
    auto blob = NewStringBlobReader(layer_->gzip);
    auto built = BuildFineIndex(*blob, Options(), dir_->Sub("windows"));
    ASSERT_TRUE(built.ok()) << built.status();
    blobs_ = new FineIndexBlobs(*std::move(built));
    auto windows = ReadFile(dir_->Sub("windows"));
    ASSERT_TRUE(windows.ok()) << windows.status();
    windows_ = new std::string(*std::move(windows));
    ASSERT_EQ(windows_->size(), blobs_->windows_size);
    ASSERT_EQ(Digest::Of(*windows_), blobs_->windows_digest);
  }
  static void TearDownTestSuite() {
    delete windows_;
    delete blobs_;
    delete layer_;
    delete dir_;
  }
  static ZtocBuildOptions Options() {
    ZtocBuildOptions o;
    o.span_size = kFineSpan;
    o.large_file_spans = 256 << 10;
    return o;
  }
  static FineRef Ref(const std::string& fine, const std::string& windows) {
    FineRef r;
    r.fine.media_type = std::string(kFineZtocMediaType);
    r.fine.digest = Digest::Of(fine);
    r.fine.size = static_cast<int64_t>(fine.size());
    r.windows.media_type = std::string(kFineWindowsMediaType);
    r.windows.digest = Digest::Of(windows);
    r.windows.size = static_cast<int64_t>(windows.size());
    return r;
  }
  static absl::StatusOr<format::LayerIndex> Open(const std::string& fine,
                                                 const std::string& windows, const FineRef& ref) {
    auto fine_blob = NewStringBlobReader(fine);
    return OpenFineSociLayerIndex(*fine_blob, NewStringBlobReader(windows), ref,
                                  layer_->gzip.size());
  }
  // The bytes of regular file `ino` through its chunks, from `gzip`.
  static absl::StatusOr<std::string> ReadThrough(const format::LayerIndex& index, format::Ino ino,
                                                 const std::string& gzip) {
    std::string out;
    for (const format::Chunk& c : index.Chunks(ino)) {
      auto span = format::DecodeSpan(
          c, std::string_view(gzip).substr(c.compressed_offset, c.compressed_length),
          index.span_decoder());
      if (!span.ok()) return span.status();
      out.append(*span, c.inner_offset, c.length);
    }
    return out;
  }

  static TempDir* dir_;
  static testing::SampleLayer* layer_;
  static FineIndexBlobs* blobs_;
  static std::string* windows_;  // the windows blob
};
TempDir* SociFineTest::dir_ = nullptr;
testing::SampleLayer* SociFineTest::layer_ = nullptr;
FineIndexBlobs* SociFineTest::blobs_ = nullptr;
std::string* SociFineTest::windows_ = nullptr;

TEST_F(SociFineTest, RoundTripChecksEverySpanAndWindow) {
  auto frame = DecodeFineBlob(blobs_->fine);
  ASSERT_TRUE(frame.ok()) << frame.status();
  auto ztoc = ParseZtoc(frame->ztoc, {.windowless_checkpoints = true});
  ASSERT_TRUE(ztoc.ok()) << ztoc.status();
  ASSERT_EQ(frame->windows.size(), ztoc->span_count());
  EXPECT_EQ(ztoc->span_count(), blobs_->spans);
  // Fine: several spans per soci default span of this few-MB layer.
  EXPECT_GT(ztoc->span_count(), layer_->tar.size() / (4 * kFineSpan));
  // The coarse zTOC of the same options holds the real windows.
  auto blob = NewStringBlobReader(layer_->gzip);
  auto real = BuildZtoc(*blob, Options());
  ASSERT_TRUE(real.ok()) << real.status();
  ASSERT_EQ(real->span_count(), ztoc->span_count());
  const std::string zeros(kWindowSize, '\0');
  uint64_t next = 0;
  for (size_t i = 0; i < ztoc->span_count(); ++i) {
    const ByteRange r = ztoc->SpanCompressedRange(i);
    EXPECT_EQ(Digest::Of(std::string_view(layer_->gzip).substr(r.offset, r.length)),
              ztoc->span_digests[i])
        << i;
    EXPECT_EQ(ztoc->span_digests[i], real->span_digests[i]) << i;
    EXPECT_EQ(ztoc->checkpoints.at(i).window, zeros) << i;  // windows live in their own blob
    const FineWindow& w = frame->windows[i];
    EXPECT_EQ(w.offset, next) << i;
    next = w.offset + w.length;
    auto window = codec::ZstdDecompress(std::string_view(*windows_).substr(w.offset, w.length));
    ASSERT_TRUE(window.ok()) << i << ": " << window.status();
    EXPECT_EQ(*window, real->checkpoints.at(i).window) << i;
    EXPECT_EQ(Digest::Of(*window).Raw(), std::string(w.sha256.begin(), w.sha256.end())) << i;
  }
  EXPECT_EQ(next, windows_->size());
  // A checkpoint's window is the 32 KiB of output before it (what FineWindows::Offer gets).
  for (size_t i = 0; i + 1 < real->span_count(); ++i) {
    auto span = testing::ReadSpan(*real, layer_->gzip, i);
    ASSERT_TRUE(span.ok()) << i << ": " << span.status();
    std::string derived = std::string(real->checkpoints.at(i).window) + *span;
    derived.erase(0, derived.size() - kWindowSize);
    EXPECT_EQ(derived, real->checkpoints.at(i + 1).window) << i;
  }
  // Zeroed windows cost nothing: the fine blob is far smaller than the windows it leaves out.
  EXPECT_LT(blobs_->fine.size(), ztoc->span_count() * kWindowSize / 8);
}

TEST_F(SociFineTest, FilesReadThroughTheFineIndexEqualTheSourceFiles) {
  auto counting = std::make_shared<CountingReader>(*windows_);
  auto fine_blob = NewStringBlobReader(blobs_->fine);
  auto index = OpenFineSociLayerIndex(*fine_blob, counting, Ref(blobs_->fine, *windows_),
                                      layer_->gzip.size());
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->toc_digest(), Digest::Of(blobs_->fine));
  auto frame = DecodeFineBlob(blobs_->fine);
  ASSERT_TRUE(frame.ok());
  auto ztoc = ParseZtoc(frame->ztoc, {.windowless_checkpoints = true});
  ASSERT_TRUE(ztoc.ok());
  size_t regular = 0;
  for (const ZtocFile& f : ztoc->files) {
    if (f.type != "reg") continue;
    const std::string name = tar::CleanEntryName(f.name);
    auto ino = index->LookupPath(name);
    ASSERT_TRUE(ino.has_value()) << name;
    auto want = ReadFile(layer_->src_dir + "/" + name);
    ASSERT_TRUE(want.ok()) << name;
    auto got = ReadThrough(*index, *ino, layer_->gzip);
    ASSERT_TRUE(got.ok()) << name << ": " << got.status();
    EXPECT_TRUE(*got == *want) << name;
    ++regular;
  }
  EXPECT_GT(regular, 50u);
  // Read in tar order, each span's successor window comes from its inflate (Offer): only the
  // first span of each run (and those a file does not reach into from the span before) needs a
  // fetch, so far fewer requests than spans.
  EXPECT_LT(static_cast<size_t>(counting->reads.load()), ztoc->span_count() / 2)
      << ztoc->span_count() << " spans";
}

TEST_F(SociFineTest, WindowsAreWarmedOfferedAndCached) {
  auto frame = DecodeFineBlob(blobs_->fine);
  ASSERT_TRUE(frame.ok());
  ASSERT_GT(frame->windows.size(), 8u);
  auto reader = std::make_shared<CountingReader>(*windows_);
  FineWindows windows(reader, frame->windows);
  auto real = [&](size_t i) {
    const FineWindow& w = frame->windows[i];
    return *codec::ZstdDecompress(std::string_view(*windows_).substr(w.offset, w.length));
  };
  auto w0 = windows.Window(0);
  ASSERT_TRUE(w0.ok()) << w0.status();
  EXPECT_EQ(**w0, real(0));
  EXPECT_EQ(reader->reads.load(), 1);
  // Warm fetches the first window of each run of spans: 4 and 5 follow 3, so their windows
  // come from inflating 3 and 4 (Offer), not from the blob.
  windows.Warm({5, 3, 4, 0});
  auto w3 = windows.Window(3);
  ASSERT_TRUE(w3.ok()) << w3.status();
  EXPECT_EQ(**w3, real(3));
  EXPECT_EQ(reader->reads.load(), 2);
  windows.Offer(4, real(4));
  windows.Offer(5, std::string(kWindowSize, 'x'));  // not the window: ignored
  auto w4 = windows.Window(4);
  ASSERT_TRUE(w4.ok()) << w4.status();
  EXPECT_EQ(**w4, real(4));
  EXPECT_EQ(reader->reads.load(), 2);
  auto w5 = windows.Window(5);
  ASSERT_TRUE(w5.ok()) << w5.status();
  EXPECT_EQ(**w5, real(5));
  EXPECT_EQ(reader->reads.load(), 3);
  ASSERT_TRUE(windows.Window(0).ok());  // cached
  EXPECT_EQ(reader->reads.load(), 3);
  EXPECT_EQ(windows.fetched(), 3u);
  EXPECT_EQ(windows.Window(frame->windows.size()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The layer's first span starts the stream: no back-reference reaches before it, so it is
// inflated without its window, and a fetch of it warms none.
TEST_F(SociFineTest, TheFirstSpanNeedsNoWindow) {
  auto frame = DecodeFineBlob(blobs_->fine);
  ASSERT_TRUE(frame.ok());
  auto ztoc = ParseZtoc(frame->ztoc, {.windowless_checkpoints = true});
  ASSERT_TRUE(ztoc.ok());
  ASSERT_EQ(ztoc->checkpoints.at(0).uncompressed_offset, 0u);
  auto counting = std::make_shared<CountingReader>(*windows_);
  {
    auto fine_blob = NewStringBlobReader(blobs_->fine);
    auto index = OpenFineSociLayerIndex(*fine_blob, counting, Ref(blobs_->fine, *windows_),
                                        layer_->gzip.size());
    ASSERT_TRUE(index.ok()) << index.status();
    const ByteRange first = ztoc->SpanCompressedRange(0);
    std::vector<const format::Chunk*> chunks;
    for (format::Ino ino = 1; ino <= index->inode_count(); ++ino) {
      for (const format::Chunk& c : index->Chunks(ino)) {
        if (c.compressed_offset == first.offset) chunks.push_back(&c);
      }
    }
    ASSERT_FALSE(chunks.empty());
    index->span_decoder()->WillFetch(chunks);
    auto span = format::DecodeSpan(
        *chunks.front(), std::string_view(layer_->gzip).substr(first.offset, first.length),
        index->span_decoder());
    ASSERT_TRUE(span.ok()) << span.status();
    EXPECT_TRUE(*span == layer_->tar.substr(0, ztoc->SpanUncompressedRange(0).length));
  }  // the index waits for any window fetch it started
  EXPECT_EQ(counting->reads.load(), 0);
}

// Windows pushed out of the 128-entry LRU come back from the compressed copies without a
// fetch: a span inflated on arrival and touched again much later must not wait for the blob.
TEST_F(SociFineTest, WindowsOutsideTheLruComeBackWithoutAFetch) {
  const size_t n = FineWindows::kCachedWindows * 2 + 3;
  std::vector<std::string> contents;
  std::vector<FineWindow> table;
  std::string blob;
  for (size_t i = 0; i < n; ++i) {
    std::string w(kWindowSize, static_cast<char>('a' + i % 26));
    std::memcpy(w.data(), &i, sizeof(i));
    auto z = codec::ZstdCompress(w);
    ASSERT_TRUE(z.ok());
    FineWindow entry{.offset = blob.size(), .length = static_cast<uint32_t>(z->size())};
    const std::string sha = Digest::Of(w).Raw();
    std::memcpy(entry.sha256.data(), sha.data(), sha.size());
    table.push_back(entry);
    blob += *z;
    contents.push_back(std::move(w));
  }
  auto reader = std::make_shared<CountingReader>(blob);
  FineWindows windows(reader, table);
  for (size_t i = 0; i < n; ++i) windows.Offer(i, contents[i]);
  for (size_t i = 0; i < n; ++i) {
    auto w = windows.Window(i);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(**w, contents[i]) << i;
  }
  EXPECT_EQ(reader->reads.load(), 0);
  EXPECT_EQ(windows.fetched(), 0u);
}

TEST_F(SociFineTest, FlippedWindowByteFailsThatSpanOnly) {
  auto frame = DecodeFineBlob(blobs_->fine);
  ASSERT_TRUE(frame.ok());
  auto ztoc = ParseZtoc(frame->ztoc, {.windowless_checkpoints = true});
  ASSERT_TRUE(ztoc.ok());
  const size_t bad = ztoc->span_count() / 2;
  std::string windows = *windows_;
  windows[frame->windows[bad].offset + frame->windows[bad].length / 2] ^= 0x01;
  // The windows blob's digest is not checked as a whole (it is read by range); each window's
  // sha256 is: the descriptor names the good blob's digest and the same size.
  auto index = Open(blobs_->fine, windows, Ref(blobs_->fine, *windows_));
  ASSERT_TRUE(index.ok()) << index.status();
  const uint64_t bad_offset = ztoc->SpanCompressedRange(bad).offset;
  const uint64_t before_offset = ztoc->SpanCompressedRange(bad - 1).offset;
  const format::Chunk* bad_chunk = nullptr;
  const format::Chunk* before_chunk = nullptr;
  std::vector<const format::Chunk*> others;
  for (format::Ino ino = 1; ino <= index->inode_count(); ++ino) {
    for (const format::Chunk& c : index->Chunks(ino)) {
      if (c.compressed_offset == bad_offset) {
        bad_chunk = &c;
      } else if (c.compressed_offset == before_offset) {
        before_chunk = &c;
      } else {
        others.push_back(&c);
      }
    }
  }
  ASSERT_NE(bad_chunk, nullptr);
  ASSERT_NE(before_chunk, nullptr);
  auto decode = [&](const format::Chunk& c) {
    return format::DecodeSpan(
        c, std::string_view(layer_->gzip).substr(c.compressed_offset, c.compressed_length),
        index->span_decoder());
  };
  // Its window fetched from the blob: refused, never inflated from.
  auto span = decode(*bad_chunk);
  ASSERT_FALSE(span.ok());
  EXPECT_EQ(span.status().code(), absl::StatusCode::kDataLoss) << span.status();
  EXPECT_THAT(std::string(span.status().message()), HasSubstr("window"));
  for (const format::Chunk* c : others) {
    if (c->compressed_offset == ztoc->SpanCompressedRange(bad + 1).offset) continue;
    ASSERT_TRUE(decode(*c).ok());
  }
  // Once the span before it is inflated, its window is that span's verified output (Offer):
  // the span inflates to the tar's bytes.
  ASSERT_TRUE(decode(*before_chunk).ok());
  span = decode(*bad_chunk);
  ASSERT_TRUE(span.ok()) << span.status();
  EXPECT_TRUE(*span == layer_->tar.substr(ztoc->SpanUncompressedRange(bad).offset,
                                          ztoc->SpanUncompressedRange(bad).length));
}

TEST_F(SociFineTest, FlippedSpanByteIsDataLoss) {
  auto index = Open(blobs_->fine, *windows_, Ref(blobs_->fine, *windows_));
  ASSERT_TRUE(index.ok()) << index.status();
  std::string gzip = layer_->gzip;
  size_t checked = 0;
  for (format::Ino ino = 1; ino <= index->inode_count() && checked < 20; ++ino) {
    for (const format::Chunk& c : index->Chunks(ino)) {
      std::string bad = gzip.substr(c.compressed_offset, c.compressed_length);
      bad[bad.size() / 2] ^= 0x40;
      auto span = format::DecodeSpan(c, bad, index->span_decoder());
      EXPECT_EQ(span.status().code(), absl::StatusCode::kDataLoss) << span.status();
      ++checked;
    }
  }
  EXPECT_GT(checked, 0u);
}

TEST_F(SociFineTest, FlippedFineBlobIsRefused) {
  const FineRef ref = Ref(blobs_->fine, *windows_);
  std::string fine = blobs_->fine;
  fine[fine.size() / 2] ^= 0x01;
  auto index = Open(fine, *windows_, ref);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss) << index.status();
  EXPECT_THAT(std::string(index.status().message()), HasSubstr("does not match its digest"));
  // A windows blob of another size than its descriptor.
  index = Open(blobs_->fine, *windows_ + "x", ref);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss) << index.status();
  // The fine blob of another layer size.
  auto fine_blob = NewStringBlobReader(blobs_->fine);
  index = OpenFineSociLayerIndex(*fine_blob, NewStringBlobReader(*windows_), ref,
                                 layer_->gzip.size() + 1);
  EXPECT_EQ(index.status().code(), absl::StatusCode::kDataLoss) << index.status();
}

TEST_F(SociFineTest, FramesOfBadShapeAreRefused) {
  auto framed = codec::ZstdDecompress(blobs_->fine, {.max_output = 256 << 20});
  ASSERT_TRUE(framed.ok());
  ASSERT_TRUE(ParseFineFrame(*framed).ok());
  for (size_t len : {size_t{0}, size_t{7}, kFineHeaderSize, framed->size() - 1}) {
    EXPECT_EQ(ParseFineFrame(framed->substr(0, len)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << len;
  }
  std::string bad = *framed;
  bad[0] = 'X';
  EXPECT_THAT(std::string(ParseFineFrame(bad).status().message()), HasSubstr("magic"));
  bad = *framed;
  bad[8] = 2;  // version
  EXPECT_EQ(ParseFineFrame(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = *framed;
  bad[kFineHeaderSize + 8] = 0;  // window 0's length
  bad[kFineHeaderSize + 9] = 0;
  bad[kFineHeaderSize + 10] = 0;
  bad[kFineHeaderSize + 11] = 0;
  EXPECT_EQ(ParseFineFrame(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = *framed;
  bad[kFineHeaderSize + kFineWindowRecordSize] = 0;  // window 1 overlaps window 0
  EXPECT_EQ(ParseFineFrame(bad).status().code(), absl::StatusCode::kInvalidArgument);
  FineLimits limits;
  limits.max_windows = blobs_->spans - 1;
  EXPECT_EQ(ParseFineFrame(*framed, limits).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(DecodeFineBlob("not zstd").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SociFineTest, IndexManifestListsTheFineBlobsAndAnnotationsTravel) {
  SociIndex index;
  ZtocRef r;
  r.ztoc.media_type = std::string(kZtocMediaType);
  r.ztoc.digest = Digest::Of("ztoc");
  r.ztoc.size = 4;
  r.layer_digest = Digest::Of("layer");
  r.layer_media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  const FineRef fine = Ref(blobs_->fine, *windows_);
  r.ztoc.annotations[std::string(kAnnotationFineZtocDigest)] = fine.fine.digest.ToString();
  r.ztoc.annotations[std::string(kAnnotationFineZtocSize)] = std::to_string(fine.fine.size);
  r.ztoc.annotations[std::string(kAnnotationFineWindowsDigest)] = fine.windows.digest.ToString();
  r.ztoc.annotations[std::string(kAnnotationFineWindowsSize)] = std::to_string(fine.windows.size);
  index.ztocs.push_back(r);
  index.extra_blobs = {fine.fine, fine.windows};
  const std::string bytes = oci::SerializeManifest(MakeSociIndexManifest(index));
  auto parsed = ParseSociIndex(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->ztocs.size(), 1u);
  ASSERT_EQ(parsed->extra_blobs.size(), 2u);
  EXPECT_EQ(parsed->extra_blobs[0].digest, fine.fine.digest);
  EXPECT_EQ(parsed->extra_blobs[1].media_type, kFineWindowsMediaType);
  EXPECT_EQ(parsed->extra_blobs[0].Annotation(std::string(kAnnotationLayerDigest)), "");
  std::map<std::string, std::string> annotations;
  AddZtocAnnotations(parsed->ztocs[0].ztoc, annotations);
  auto found = FineFromAnnotations(annotations);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->fine.digest, fine.fine.digest);
  EXPECT_EQ((*found)->windows.size, fine.windows.size);
  // Without them: the zTOC path; incomplete: an error the daemon logs before using the zTOC.
  auto none = FineFromAnnotations({});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  annotations.erase(std::string(kAnnotationFineWindowsSize));
  EXPECT_EQ(FineFromAnnotations(annotations).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazypull::soci
