// Graduation without mounts (no root): the sparse sink writes holes without buffers, the tar
// rebuilder streams a 100 GiB "zeros" chunk in bounded memory and rebuilds the exact tar
// around it, the graduated store keeps copies root-only, counts failures across instances and
// deletes copies no snapshot uses, a job that throws becomes a failed job, and a lazy blob is
// read back exactly from a copy through its CopyBlobMap (which rejects malformed text).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "base/background_guard.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "gtest/gtest.h"
#include "mount/erofs/copy_blob_map.h"
#include "mount/erofs/graduated_store.h"
#include "mount/erofs/sparse_file_sink.h"
#include "mount/erofs/tar_rebuilder.h"
#include "tests/erofs/erofs_test_util.h"
#include "tests/harness/test_env.h"

namespace lazypull::erofs_testing {
namespace {

using mount::erofs::GraduatedStore;
using mount::erofs::SparseFileSink;
using testing::TempDir;

constexpr uint64_t kHundredGiB = 100ull << 30;

// Peak resident memory of this process (kB) and a reset of it (Linux >= 4.0).
uint64_t StatusKb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1));
  }
  return 0;
}
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Records what a rebuild appends: bytes as they are, zero runs by length only.
class RecordingSink : public mount::erofs::ZeroAwareSink {
 public:
  absl::Status Append(std::string_view data) override {
    largest_append = std::max<uint64_t>(largest_append, data.size());
    if (zeros_at_ == UINT64_MAX) {
      before.append(data);
    } else {
      after.append(data);
    }
    size_ += data.size();
    return absl::OkStatus();
  }
  absl::Status AppendZeros(uint64_t n) override {
    zero_runs += n;
    if (zeros_at_ == UINT64_MAX) zeros_at_ = size_;
    size_ += n;
    return absl::OkStatus();
  }
  uint64_t size() const override { return size_; }

  std::string before, after;
  uint64_t zero_runs = 0;
  uint64_t largest_append = 0;

 private:
  uint64_t size_ = 0;
  uint64_t zeros_at_ = UINT64_MAX;
};

std::unique_ptr<ChunkCache> OpenCache(const std::string& dir) {
  CacheConfig cc;
  cc.dir = dir;
  auto cache = ChunkCache::Open(cc);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? std::move(*cache) : nullptr;
}

std::shared_ptr<LayerReader> NewReader(const TestLayer& layer, ChunkCache* cache) {
  LayerReaderOptions o;
  o.background_fetch = false;
  o.prefetch = false;
  auto r = LayerReader::Create("sha256:" + std::string(64, 'd'), layer.index, layer.blob, cache, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::shared_ptr<LayerReader>(std::move(*r)) : nullptr;
}

TEST(SparseFileSink, ZeroRunsAreHolesAndTheHashCoversThem) {
  TempDir tmp("sparsesink");
  auto sink = SparseFileSink::Create(tmp.Sub("f"), {.hash = true});
  ASSERT_TRUE(sink.ok()) << sink.status();
  ASSERT_TRUE((*sink)->Append("head").ok());
  ASSERT_TRUE((*sink)->AppendZeros(10 << 20).ok());
  ASSERT_TRUE((*sink)->Append(std::string(5000, 'x')).ok());
  ASSERT_TRUE((*sink)->AppendZeros(3).ok());
  auto digest = (*sink)->Finish();
  ASSERT_TRUE(digest.ok()) << digest.status();
  const std::string expected =
      "head" + std::string(10 << 20, '\0') + std::string(5000, 'x') + std::string(3, '\0');
  EXPECT_EQ(*digest, Digest::Of(expected));
  auto written = testing::ReadFile(tmp.Sub("f"));
  ASSERT_TRUE(written.ok());
  EXPECT_TRUE(*written == expected);
  struct stat st;
  ASSERT_EQ(stat(tmp.Sub("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 64u << 10) << "zeros were written";
}

TEST(SparseFileSink, AHundredGiBHoleCostsNoDiskAndNoMemory) {
  TempDir tmp("sparsesink");
  ResetPeakRss();
  const uint64_t rss_before = StatusKb("VmRSS");
  auto sink = SparseFileSink::Create(tmp.Sub("f"), {.hash = false});
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Append("x").ok());
  ASSERT_TRUE((*sink)->AppendZeros(kHundredGiB).ok());
  ASSERT_TRUE((*sink)->Append("y").ok());
  ASSERT_TRUE((*sink)->Finish().ok());
  EXPECT_LT(StatusKb("VmHWM") - rss_before, 64u << 10);
  struct stat st;
  ASSERT_EQ(stat(tmp.Sub("f").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kHundredGiB + 2);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 64u << 10);
}

// The crash: a zstd:chunked "zeros" chunk of 100 GiB. The rebuild appends it as one
// zero run, reads every other chunk in bounded pieces, and the bytes around it are the tar's.
TEST(TarRebuilder, AHundredGiBZerosChunkIsStreamedInBoundedMemory) {
  TempDir tmp("rebuild");
  auto sparse = MakeSparseZstdChunkedLayer(kHundredGiB);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  auto cache = OpenCache(tmp.Sub("cache"));
  auto reader = NewReader(sparse->layer, cache.get());
  ASSERT_NE(reader, nullptr);
  RecordingSink sink;
  std::atomic<bool> cancel{false};
  ResetPeakRss();
  const uint64_t rss_before = StatusKb("VmRSS");
  auto stats = mount::erofs::RebuildZstdChunkedTar(*reader, *sparse->layer.blob, sink, cancel);
  const uint64_t peak_growth_kb = StatusKb("VmHWM") - rss_before;
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_LT(peak_growth_kb, 64u << 10);
  EXPECT_EQ(sink.zero_runs, kHundredGiB);
  EXPECT_EQ(stats->zero_bytes, kHundredGiB);
  EXPECT_LE(sink.largest_append, mount::erofs::kGraduationPieceBytes);
  EXPECT_TRUE(sink.before == sparse->tar_before_hole) << "tar before the hole differs";
  EXPECT_TRUE(sink.after == sparse->tar_after_hole) << "tar after the hole differs";
  // The skippable frames after the data area (manifest, tar-split, footer) are not fetched.
  EXPECT_LT(stats->fetched_bytes, sparse->layer.index->data_range().length);
}

TEST(TarRebuilder, CancelStopsIt) {
  TempDir tmp("rebuild");
  auto layer = MakeTestLayer(RichEntries(), /*zstd_chunked=*/true);
  ASSERT_TRUE(layer.ok());
  auto cache = OpenCache(tmp.Sub("cache"));
  auto reader = NewReader(*layer, cache.get());
  RecordingSink sink;
  std::atomic<bool> cancel{true};
  auto stats = mount::erofs::RebuildZstdChunkedTar(*reader, *layer->blob, sink, cancel);
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kCancelled) << stats.status();
}

TEST(GraduatedStore, CopiesAreRootOnlyAndUnusedOnesAreDeleted) {
  TempDir tmp("gradstore");
  auto layer = MakeTestLayer(RichEntries(), /*zstd_chunked=*/false);
  ASSERT_TRUE(layer.ok());
  auto cache = OpenCache(tmp.Sub("cache"));
  auto reader = NewReader(*layer, cache.get());
  GraduatedStore store(tmp.Sub("graduated"));
  mount::LayerOrigin origin;
  origin.cache = cache.get();
  std::atomic<bool> cancel{false};
  const std::string id = reader->layer_id();
  auto built = store.Build(id, *reader, origin, cancel);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ((*built)->stats().method, "blob");
  EXPECT_FALSE(store.Find(id).has_value()) << "visible before Publish";
  ASSERT_TRUE(store.Publish(**built).ok());
  auto found = store.Find(id);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->method, "blob");
  struct stat st;
  ASSERT_EQ(stat(store.dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(stat(found->dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  for (const auto& e : std::filesystem::directory_iterator(found->dir)) {
    ASSERT_EQ(stat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0400u) << e.path();
  }
  EXPECT_GT(store.DiskBytes(), 0u);

  // A built copy that is never published leaves nothing.
  auto unpublished = store.Build("sha256:" + std::string(64, 'e'), *reader, origin, cancel);
  ASSERT_TRUE(unpublished.ok());
  unpublished->reset();
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(store.dir()),
                          std::filesystem::directory_iterator()),
            1);

  // Failure counts persist across instances and go with the copy.
  EXPECT_EQ(store.Failures(id), 0);
  ASSERT_TRUE(store.SetFailures(id, 1).ok());
  ASSERT_TRUE(store.SetFailures(id, 2).ok());
  EXPECT_EQ(GraduatedStore(store.dir()).Failures(id), 2);
  ASSERT_TRUE(store.SetFailures("sha256:" + std::string(64, 'f'), 1).ok());

  EXPECT_TRUE(store.RemoveAllBut({id}).empty());
  EXPECT_TRUE(store.Find(id).has_value());
  EXPECT_EQ(store.Failures("sha256:" + std::string(64, 'f')), 0) << "marker of an unused layer";
  EXPECT_EQ(store.RemoveAllBut({}).size(), 1u);
  EXPECT_FALSE(store.Find(id).has_value());
  EXPECT_EQ(store.Failures(id), 0);
  EXPECT_EQ(store.DiskBytes(), 0u);
}

TEST(RunGuarded, AThrowingJobIsAFailedJob) {
  absl::Status s = RunGuarded("test job", {{"layer", "x"}},
                              []() -> absl::Status { throw std::runtime_error("boom"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("boom"), std::string::npos) << s;
  absl::StatusOr<int> v =
      RunGuarded("test job", {}, []() -> absl::StatusOr<int> { throw std::bad_alloc(); });
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInternal);
  bool ran = false;
  RunGuarded("void job", {}, [&] {
    ran = true;
    throw 42;
  });
  EXPECT_TRUE(ran);
  EXPECT_EQ(*RunGuarded("fine", {}, []() -> absl::StatusOr<int> { return 7; }), 7);
}

// A blob-layout lazy blob mapped into a tar copy: every blob byte reads back as the file bytes
// at their tar payloads, bytes in no extent as zeros; the map survives its text form, and a
// blob copy of a blob-layout blob is one extent over the whole blob.
TEST(CopyBlobMap, ReadsTheLazyBlobFromATarCopy) {
  TempDir dir;
  // Two files: ino 1 "abcdefgh" at blob offset 0 (padded to 16), ino 2 "XYZ" at 16.
  mount::erofs::BlobLayout lazy;
  lazy.size = 32;
  lazy.extents = {{.offset = 0, .length = 8, .ino = 1, .file_offset = 0},
                  {.offset = 16, .length = 3, .ino = 2, .file_offset = 0}};
  // The tar copy: ino 1 at 512, ino 2 at 1536.
  std::string tar(2048, '\0');
  tar.replace(512, 8, "abcdefgh");
  tar.replace(1536, 3, "XYZ");
  const std::string path = dir.path() + "/layer.tar";
  {
    std::ofstream out(path, std::ios::binary);
    out << tar;
  }
  std::optional<mount::erofs::CopyBlobMap> map = mount::erofs::MapLazyBlobToCopy(
      lazy, "0123456789abcdef", /*lazy_is_tar=*/false, "tar", {512, 1536});
  ASSERT_TRUE(map.has_value());
  absl::StatusOr<mount::erofs::CopyBlobMap> parsed =
      mount::erofs::ParseCopyBlobMap(mount::erofs::SerializeCopyBlobMap(*map));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->fingerprint, "0123456789abcdef");
  mount::erofs::CopyBlobSource source("sha256:x", UniqueFd(::open(path.c_str(), O_RDONLY)),
                                      std::move(*parsed));
  EXPECT_EQ(source.size(), 32u);
  std::string expected(32, '\0');
  expected.replace(0, 8, "abcdefgh");
  expected.replace(16, 3, "XYZ");
  for (uint64_t off = 0; off < 32; ++off) {
    std::string buf(64, '?');
    absl::StatusOr<size_t> n = source.ReadAt(off, buf.data(), buf.size());
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_EQ(*n, 32 - off);
    EXPECT_EQ(buf.substr(0, *n), expected.substr(off)) << "at " << off;
  }
  EXPECT_EQ(*source.ReadAt(32, nullptr, 10), 0u);

  std::optional<mount::erofs::CopyBlobMap> same =
      mount::erofs::MapLazyBlobToCopy(lazy, "0123456789abcdef", false, "blob", {});
  ASSERT_TRUE(same.has_value());
  ASSERT_EQ(same->extents.size(), 1u);
  EXPECT_EQ(same->extents[0].length, 32u);
  // A blob copy cannot serve a tar-layout blob; a tar copy needs payloads.
  EXPECT_FALSE(mount::erofs::MapLazyBlobToCopy(lazy, "0123456789abcdef", true, "blob", {}));
  EXPECT_FALSE(mount::erofs::MapLazyBlobToCopy(lazy, "0123456789abcdef", false, "tar", {}));
}

TEST(CopyBlobMap, MalformedTextIsRejected) {
  const std::string head = "lazypull-copy-blob-map v1\n0123456789abcdef 100 ";
  for (const std::string& bad : {
           std::string("nonsense\n"),
           head + "1\n",                             // one extent announced, none given
           head + "1\n0 0 0\n",                      // empty extent
           head + "1\n90 20 0\n",                    // past the blob
           head + "2\n10 10 0\n15 10 0\n",           // overlapping
           head + "1\n0 10 18446744073709551615\n",  // data offset overflows
       }) {
    absl::StatusOr<mount::erofs::CopyBlobMap> map = mount::erofs::ParseCopyBlobMap(bad);
    EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace lazypull::erofs_testing
