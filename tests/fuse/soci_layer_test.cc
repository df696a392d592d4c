// SOCI layers served lazily (issue 19), on FUSE and EROFS (label root), and their EROFS
// graduation to the layer's original tar: a real tree packed by
// GNU tar (pax: xattrs, nanosecond times) and gzip, UNMODIFIED; its zTOC built by BuildZtoc with
// small spans, serialized and parsed back as the daemon would receive it; the layer mounted
// through BuildSociLayerIndex + LayerReader and compared with the source tree entry by entry.
// Fault injection through FaultBlobReader (the registry seam).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/soci/soci_layer_index.h"
#include "fetcher/format/soci/soci_layer_open.h"
#include "fetcher/format/soci/span_slices.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/format/soci/ztoc_parser.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "gtest/gtest.h"
#include "mount/backend.h"
#include "mount/mount_config.h"
#include "nlohmann/json.hpp"
#include "tests/fuse/fault_blob_reader.h"
#include "tests/fuse/file_test_util.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using ::lazypull::testing::FaultBlobReader;
using ::lazypull::testing::MustWrite;
using ::lazypull::testing::RandomBytes;
using ::lazypull::testing::ReadAll;
using ::lazypull::testing::ReadFile;
using ::lazypull::testing::RunCommand;
using ::lazypull::testing::TempDir;
using ::lazypull::testing::WriteFile;

// Small spans, so the tree spreads over many of them and files cross span boundaries.
constexpr uint64_t kSpanSize = 64 << 10;

void BuildSourceTree(const std::string& src) {
  fs::create_directories(src + "/dir/sub");
  fs::create_directories(src + "/private");
  fs::create_directories(src + "/deleted");
  fs::create_directories(src + "/opq");
  MustWrite(src + "/small.txt", "hello soci\n");
  MustWrite(src + "/empty", "");
  // Incompressible and compressible data, each over several spans.
  MustWrite(src + "/random.bin", RandomBytes(300000, 1), 0755);
  std::string text;
  for (int i = 0; text.size() < 500000; ++i) text += "line " + std::to_string(i * 7919) + "\n";
  MustWrite(src + "/text.txt", text);
  for (int i = 0; i < 40; ++i) {
    MustWrite(src + "/dir/sub/f" + std::to_string(i), RandomBytes(3000 + 97 * i, 100 + i), 0600);
  }
  MustWrite(src + "/dir/setuid", "#!/bin/sh\n", 04755);
  MustWrite(src + "/private/owned", "owned by 1234:5678\n", 0640);
  ASSERT_EQ(chown((src + "/private/owned").c_str(), 1234, 5678), 0);
  ASSERT_EQ(chown((src + "/private").c_str(), 1234, 5678), 0);
  ASSERT_EQ(chmod((src + "/private").c_str(), 0750), 0);
  ASSERT_EQ(setxattr((src + "/small.txt").c_str(), "user.color", "blue", 4, 0), 0);
  ASSERT_EQ(setxattr((src + "/dir").c_str(), "user.tag", "a\0b", 3, 0), 0);
  ASSERT_EQ(symlink("small.txt", (src + "/link").c_str()), 0);
  ASSERT_EQ(link((src + "/random.bin").c_str(), (src + "/dir/hardlink.bin").c_str()), 0);
  ASSERT_EQ(mkfifo((src + "/fifo").c_str(), 0644), 0);
  ASSERT_EQ(mknod((src + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  MustWrite(src + "/deleted/.wh.gone", "");
  MustWrite(src + "/opq/.wh..wh..opq", "");
  MustWrite(src + "/opq/keep", "kept\n");
}

struct SociLayer {
  std::string tar;   // the uncompressed layer
  Digest diff_id;    // its sha256
  std::string gzip;  // the layer blob, untouched
  std::shared_ptr<const soci::Ztoc> ztoc;
  std::string ztoc_bytes;  // serialized, as a registry serves it
  Digest ztoc_digest;
  std::shared_ptr<const format::LayerIndex> index;
};

SociLayer* g_layer = nullptr;
TempDir* g_shared = nullptr;

void BuildLayer() {
  g_shared = new TempDir("lazypull-soci-src");
  const std::string src = g_shared->Sub("src");
  BuildSourceTree(src);
  const std::string tar = g_shared->Sub("layer.tar");
  const std::string tgz = g_shared->Sub("layer.tar.gz");
  auto r = RunCommand({"sh", "-c",
                       "tar --format=pax --xattrs --xattrs-include='*' --numeric-owner "
                       "--sort=name -C " +
                           src + " -cf " + tar + " . && gzip -6 -c " + tar + " > " + tgz});
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
  g_layer = new SociLayer;
  auto plain = ReadFile(tar);
  ASSERT_TRUE(plain.ok());
  g_layer->tar = *plain;
  g_layer->diff_id = Digest::Of(g_layer->tar);
  auto gz = ReadFile(tgz);
  ASSERT_TRUE(gz.ok());
  g_layer->gzip = *gz;
  auto blob = NewStringBlobReader(g_layer->gzip);
  auto built = soci::BuildZtoc(*blob, {.span_size = kSpanSize});
  ASSERT_TRUE(built.ok()) << built.status();
  // As the daemon gets it: serialized bytes, verified by digest, parsed as untrusted input.
  auto bytes = soci::SerializeZtoc(*built);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  g_layer->ztoc_bytes = *bytes;
  g_layer->ztoc_digest = Digest::Of(*bytes);
  auto parsed = soci::ParseZtoc(*bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_GT(parsed->span_count(), 10u);
  g_layer->ztoc = std::make_shared<const soci::Ztoc>(std::move(*parsed));
  auto index = soci::BuildSociLayerIndex(g_layer->ztoc, g_layer->ztoc_digest);
  ASSERT_TRUE(index.ok()) << index.status();
  g_layer->index = std::make_shared<const format::LayerIndex>(std::move(*index));
}

std::map<std::string, std::string> Xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  char names[4096];
  ssize_t n = llistxattr(path.c_str(), names, sizeof(names));
  EXPECT_GE(n, 0) << path << ": " << strerror(errno);
  for (ssize_t i = 0; i < n; i += strlen(names + i) + 1) {
    std::string name(names + i);
    if (name.rfind("security.", 0) == 0) continue;  // set by the host, not the layer
    char value[4096];
    ssize_t v = lgetxattr(path.c_str(), name.c_str(), value, sizeof(value));
    EXPECT_GE(v, 0) << path << " " << name;
    out[name] = std::string(value, std::max<ssize_t>(v, 0));
  }
  return out;
}

// Every entry of the source tree against the mount: type and permission bits, owners, mtime
// (pax records nanoseconds), size, link count, contents, symlink targets, devices, user xattrs.
// Whiteouts and opaque directories in their overlay form.
void CompareWithSource(const std::string& src, const std::string& mnt, bool erofs) {
  size_t compared = 0;
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator();
       ++it) {
    const std::string rel = fs::relative(it->path(), src).string();
    if (it->path().filename().string().rfind(".wh.", 0) == 0) continue;
    SCOPED_TRACE(rel);
    const std::string a = src + "/" + rel, b = mnt + "/" + rel;
    struct stat sa, sb;
    ASSERT_EQ(lstat(a.c_str(), &sa), 0);
    ASSERT_EQ(lstat(b.c_str(), &sb), 0) << "missing in the mount: " << strerror(errno);
    EXPECT_EQ(sa.st_mode, sb.st_mode);
    EXPECT_EQ(sa.st_uid, sb.st_uid);
    EXPECT_EQ(sa.st_gid, sb.st_gid);
    EXPECT_EQ(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
    // EROFS compact inodes keep whole seconds only when every mtime fits the image base.
    if (!erofs) {
      EXPECT_EQ(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec);
    }
    if (!S_ISDIR(sa.st_mode)) {
      EXPECT_EQ(sa.st_nlink, sb.st_nlink);
    }
    if (S_ISREG(sa.st_mode)) {
      EXPECT_EQ(sa.st_size, sb.st_size);
      auto want = ReadFile(a);
      auto got = ReadAll(b);
      ASSERT_TRUE(want.ok() && got.ok()) << got.status();
      EXPECT_TRUE(*want == *got) << "contents differ";
    }
    if (S_ISLNK(sa.st_mode)) {
      EXPECT_EQ(fs::read_symlink(a), fs::read_symlink(b));
    }
    if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) {
      EXPECT_EQ(sa.st_rdev, sb.st_rdev);
    }
    // The opaque directory's overlay xattrs are checked below.
    if (!S_ISLNK(sa.st_mode) && rel != "opq") {
      EXPECT_EQ(Xattrs(a), Xattrs(b));
    }
    ++compared;
  }
  EXPECT_GT(compared, 50u);
  // deleted/.wh.gone → a whiteout char 0:0 named "gone"; opq is opaque.
  struct stat wh;
  ASSERT_EQ(lstat((mnt + "/deleted/gone").c_str(), &wh), 0);
  EXPECT_TRUE(S_ISCHR(wh.st_mode));
  EXPECT_EQ(wh.st_rdev, makedev(0, 0));
  EXPECT_FALSE(fs::exists(mnt + "/deleted/.wh.gone"));
  EXPECT_FALSE(fs::exists(mnt + "/opq/.wh..wh..opq"));
  char v[8];
  ASSERT_EQ(lgetxattr((mnt + "/opq").c_str(), "trusted.overlay.opaque", v, sizeof(v)), 1);
  EXPECT_EQ(v[0], 'y');
}

// The spans holding file `rel`'s bytes (a hardlink's: its target's).
std::set<size_t> SpansOf(const std::string& rel) {
  std::set<size_t> out;
  for (const soci::ZtocFile& f : g_layer->ztoc->files) {
    if (f.name != "./" + rel) continue;
    if (f.type == "hardlink") return SpansOf(f.linkname.substr(2));
    for (const soci::SpanSlice& s :
         soci::SlicesForRange(*g_layer->ztoc, f.uncompressed_offset, f.uncompressed_size)) {
      out.insert(s.span);
    }
  }
  return out;
}

// Parameter: the backend ("fuse" or "erofs").
class SociLayerTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { BuildLayer(); }
  static void TearDownTestSuite() {
    delete g_layer;
    delete g_shared;
    g_layer = nullptr;
    g_shared = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(g_layer, nullptr);
    ASSERT_NE(g_layer->index, nullptr);
    fault_ = std::make_shared<FaultBlobReader>(NewStringBlobReader(g_layer->gzip));
    CacheConfig cc;
    cc.dir = tmp_.Sub("cache");
    auto cache = ChunkCache::Open(cc);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
    config_.backend =
        GetParam() == "erofs" ? mount::BackendKind::kErofs : mount::BackendKind::kFuse;
    config_.erofs.dir = tmp_.Sub("erofs");
    config_.erofs.graduation_check = std::chrono::milliseconds(100);
    auto backend = mount::NewLayerMountBackend(config_);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }
  void TearDown() override {
    mounted_.reset();
    backend_.reset();
  }

  std::shared_ptr<LayerReader> NewReader(bool background) {
    LayerReaderOptions o;
    o.fetch_timeout = std::chrono::milliseconds(5000);
    o.prefetch = false;
    o.background_fetch = background;
    o.background_silence = std::chrono::milliseconds(0);
    o.readahead_window = 0;  // only what is read (readahead has its own tests)
    o.directory_batch.small_file = 0;
    auto r = LayerReader::Create("sha256:" + std::string(64, 'c'), g_layer->index, fault_,
                                 cache_.get(), o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }

  std::string Mount(std::shared_ptr<LayerReader> reader, mount::LayerOrigin origin = {}) {
    const std::string dir = tmp_.Sub("mnt");
    fs::create_directories(dir);
    auto m = backend_->Mount({.layer_id = reader->layer_id(),
                              .reader = reader,
                              .target_dir = dir,
                              .origin = std::move(origin)});
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return "";
    mounted_ = std::move(*m);
    return dir;
  }

  bool erofs() const { return GetParam() == "erofs"; }

  TempDir tmp_{"lazypull-soci"};
  std::shared_ptr<FaultBlobReader> fault_;
  std::unique_ptr<ChunkCache> cache_;
  mount::MountConfig config_;
  std::unique_ptr<mount::LayerMountBackend> backend_;
  std::unique_ptr<mount::MountedLayer> mounted_;
};

TEST_P(SociLayerTest, ServesTheExactTree) {
  const std::string mnt = Mount(NewReader(false));
  ASSERT_FALSE(mnt.empty());
  EXPECT_EQ(g_layer->index->format(), format::LayerFormat::kSoci);
  EXPECT_EQ(format::LayerFormatName(g_layer->index->format()), "soci");
  EXPECT_EQ(g_layer->index->toc_digest(), g_layer->ztoc_digest);
  CompareWithSource(g_shared->Sub("src"), mnt, erofs());
  // Every byte went through a verified span: the whole tree read fetched each span at most
  // once (spans overlap by at most one byte where a deflate block starts mid-byte).
  EXPECT_LE(fault_->bytes(), g_layer->gzip.size() + g_layer->ztoc->span_count());
  EXPECT_EQ(mounted_->Status().reader.verify_errors, 0u);
}

TEST_P(SociLayerTest, OnlyTheSpansReadAreFetched) {
  const std::string mnt = Mount(NewReader(false));
  ASSERT_FALSE(mnt.empty());
  // Metadata needs no span.
  for (const auto& e : fs::recursive_directory_iterator(mnt)) {
    struct stat st;
    ASSERT_EQ(lstat(e.path().c_str(), &st), 0);
  }
  EXPECT_EQ(fault_->requests(), 0u);
  auto got = ReadAll(mnt + "/text.txt");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == *ReadFile(g_shared->Sub("src") + "/text.txt"));
  const std::set<size_t> spans = SpansOf("text.txt");
  ASSERT_GE(spans.size(), 2u);
  // Each fetched byte belongs to a span of the file: the requests tile those spans (merged
  // when adjacent), nothing else.
  uint64_t want = 0;
  for (size_t s : spans) want += g_layer->ztoc->SpanCompressedRange(s).length;
  std::set<uint64_t> fetched;
  for (const ByteRange& r : fault_->ranges()) {
    for (size_t s = 0; s < g_layer->ztoc->span_count(); ++s) {
      const ByteRange sr = g_layer->ztoc->SpanCompressedRange(s);
      if (r.offset <= sr.offset && sr.end() <= r.end()) fetched.insert(s);
    }
  }
  if (!erofs()) {
    // FUSE: exactly the file's spans (EROFS's blob layout may let the kernel read ahead into
    // the next file's bytes).
    EXPECT_EQ(fetched, spans);
    EXPECT_LE(fault_->bytes(), want);
    EXPECT_GE(fault_->bytes() + spans.size(), want);
  } else {
    EXPECT_TRUE(std::includes(fetched.begin(), fetched.end(), spans.begin(), spans.end()));
  }
  EXPECT_LT(fault_->bytes(), g_layer->gzip.size() / 2);
  // Each span's compressed bytes are in the cache under the span digest (stored just after
  // the readers were served).
  for (size_t s : spans) {
    EXPECT_TRUE(testing::WaitUntil([&] { return cache_->Contains(g_layer->ztoc->span_digests[s]); },
                                   std::chrono::seconds(10)))
        << s;
  }
}

TEST_P(SociLayerTest, NeighbouringFilesShareOneSpanFetch) {
  const std::string mnt = Mount(NewReader(false));
  ASSERT_FALSE(mnt.empty());
  // Small files in one span: the first read fetches the span, the others are served from it.
  std::vector<std::string> same;
  const std::set<size_t> first = SpansOf("dir/sub/f0");
  ASSERT_EQ(first.size(), 1u);
  for (int i = 0; i < 40; ++i) {
    const std::string rel = "dir/sub/f" + std::to_string(i);
    if (SpansOf(rel) == first) same.push_back(rel);
  }
  ASSERT_GE(same.size(), 3u);
  for (const std::string& rel : same) {
    auto got = ReadAll(mnt + "/" + rel);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(*got == *ReadFile(g_shared->Sub("src") + "/" + rel)) << rel;
  }
  if (!erofs()) {
    EXPECT_EQ(fault_->requests(), 1u);
    EXPECT_EQ(fault_->bytes(), g_layer->ztoc->SpanCompressedRange(*first.begin()).length);
  }
}

TEST_P(SociLayerTest, AFlippedByteInASpanIsEioAndNeverCached) {
  const std::string mnt = Mount(NewReader(false));
  ASSERT_FALSE(mnt.empty());
  const std::set<size_t> spans = SpansOf("random.bin");
  ASSERT_GE(spans.size(), 2u);
  const size_t bad_span = *spans.rbegin();
  const ByteRange bad = g_layer->ztoc->SpanCompressedRange(bad_span);
  fault_->CorruptByte(bad.offset + bad.length / 2);
  auto read = ReadAll(mnt + "/random.bin");
  ASSERT_FALSE(read.ok()) << "a corrupt span was served";
  EXPECT_NE(read.status().message().find("Input/output error"), std::string::npos) << read.status();
  EXPECT_FALSE(cache_->Contains(g_layer->ztoc->span_digests[bad_span]));
  EXPECT_GT(mounted_->Status().reader.verify_errors, 0u);
  // A file in other spans reads fine meanwhile.
  ASSERT_TRUE(SpansOf("small.txt").count(bad_span) == 0);
  auto small = ReadAll(mnt + "/small.txt");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(*small, "hello soci\n");
  // The registry serves the right bytes again: the file reads exactly.
  fault_->CorruptByte(std::nullopt);
  auto good = ReadAll(mnt + "/random.bin");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(*good == *ReadFile(g_shared->Sub("src") + "/random.bin"));
}

TEST_P(SociLayerTest, ReadsAfterARestartComeFromTheCachedSpans) {
  {
    const std::string mnt = Mount(NewReader(false));
    ASSERT_FALSE(mnt.empty());
    ASSERT_TRUE(ReadAll(mnt + "/random.bin").ok());
    mounted_.reset();
  }
  const uint64_t fetched = fault_->bytes();
  // A new reader (a restarted daemon): the compressed spans in the cache are verified and
  // inflated again, nothing is fetched.
  const std::string mnt = Mount(NewReader(false));
  auto got = ReadAll(mnt + "/random.bin");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == *ReadFile(g_shared->Sub("src") + "/random.bin"));
  EXPECT_EQ(fault_->bytes(), fetched);
}

// FUSE: a fully fetched layer reads from the cached spans, the registry gone. (EROFS graduates:
// SociErofsTest.)
TEST_P(SociLayerTest, BackgroundFetchMakesTheLayerLocal) {
  const std::string mnt = Mount(NewReader(true));
  ASSERT_FALSE(mnt.empty());
  mounted_->StartBackground();
  ASSERT_TRUE(testing::WaitUntil([&] { return mounted_->Status().reader.background == "done"; },
                                 std::chrono::seconds(60)))
      << mounted_->Status().ToJson().dump();
  EXPECT_EQ(mounted_->Status().reader.fetched_percent(), 100.0);
  fault_->SetFailing(true);
  CompareWithSource(g_shared->Sub("src"), mnt, erofs());
}

// The source of the mount at `target` in /proc/self/mountinfo (the image file of an EROFS
// mount); "" if nothing is mounted there.
std::string MountSource(const std::string& target) {
  auto info = ReadFile("/proc/self/mountinfo");
  EXPECT_TRUE(info.ok());
  std::string source;
  std::istringstream in(info.ok() ? *info : "");
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::istringstream words(line);
    for (std::string w; words >> w;) f.push_back(w);
    if (f.size() < 10 || f[4] != target) continue;
    auto dash = std::find(f.begin() + 6, f.end(), "-");
    if (dash != f.end() && dash + 2 < f.end()) source = *(dash + 2);
  }
  return source;
}

// EROFS: a SOCI layer's lazy blob is its uncompressed tar, so it graduates to that tar.
class SociErofsTest : public SociLayerTest {
 protected:
  mount::LayerOrigin Origin(const Digest& diff_id) {
    mount::LayerOrigin origin;
    origin.cache = cache_.get();
    origin.blob = fault_;
    origin.diff_id = [diff_id]() -> absl::StatusOr<Digest> { return diff_id; };
    return origin;
  }
  std::string Graduated() const { return config_.erofs.dir + "/graduated"; }
  std::string CopyDir() const { return Graduated() + "/sha256-" + std::string(64, 'c'); }
};

// Lazily, the tree is exact and the EROFS image has the tar's 512-byte blocks. Once the
// background fetch made the layer local, graduation inflates the cached spans into the layer's
// ORIGINAL tar (byte for byte, checked against the diff_id), downloading nothing again but the
// gzip header, switches the mount to it (mountinfo names the copy's image) and releases the
// spans from the cache; the tree stays exact with the registry gone, and no request follows.
TEST_P(SociErofsTest, LazyBlobIsTheTarAndGraduatesToIt) {
  const std::string mnt = Mount(NewReader(true), Origin(g_layer->diff_id));
  ASSERT_FALSE(mnt.empty());
  struct statfs sf;
  ASSERT_EQ(statfs(mnt.c_str(), &sf), 0);
  EXPECT_EQ(sf.f_bsize, 512) << "the lazy blob is laid out as the tar";
  EXPECT_NE(MountSource(mnt).find(config_.erofs.dir + "/images/"), std::string::npos)
      << MountSource(mnt);
  CompareWithSource(g_shared->Sub("src"), mnt, true);
  mounted_->StartBackground();
  ASSERT_TRUE(
      testing::WaitUntil([&] { return mounted_->Status().graduated; }, std::chrono::seconds(60)))
      << mounted_->Status().ToJson().dump();
  EXPECT_EQ(mounted_->Status().graduation, "done");
  auto copy = ReadFile(CopyDir() + "/layer.tar");
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_TRUE(*copy == g_layer->tar) << "the copy is not the layer's tar";
  EXPECT_FALSE(fs::exists(CopyDir() + "/layer.blob"));
  auto info = ReadFile(CopyDir() + "/info.json");
  ASSERT_TRUE(info.ok());
  auto json = nlohmann::json::parse(*info);
  EXPECT_EQ(json.value("method", ""), "tar");
  EXPECT_EQ(json.value("diff_id", ""), g_layer->diff_id.ToString());
  EXPECT_EQ(json.value("chunks_verified", uint64_t{0}), g_layer->ztoc->span_count());
  EXPECT_EQ(MountSource(mnt), CopyDir() + "/meta.erofs");
  // Each compressed byte crossed the "network" about once (neighbouring spans share a byte).
  EXPECT_LE(fault_->bytes(), g_layer->gzip.size() + g_layer->ztoc->span_count());
  for (size_t i = 0; i < g_layer->ztoc->span_count(); ++i) {
    EXPECT_TRUE(
        testing::WaitUntil([&] { return !cache_->Contains(g_layer->ztoc->span_digests[i]); },
                           std::chrono::seconds(10)))
        << "span " << i << " stays in the cache";
  }
  const uint64_t requests = fault_->requests();
  fault_->SetFailing(true);
  CompareWithSource(g_shared->Sub("src"), mnt, true);
  EXPECT_EQ(fault_->requests(), requests);
}

// A layer whose tar does not hash to the diff_id the image config gives never gets a copy: the
// graduation fails (recorded, retried once later), nothing is kept, and the mount stays lazy,
// serving exactly what its verified spans hold.
TEST_P(SociErofsTest, ADiffIdMismatchKeepsTheLayerLazy) {
  const std::string mnt = Mount(NewReader(true), Origin(Digest::Of("not this layer's tar")));
  ASSERT_FALSE(mnt.empty());
  mounted_->StartBackground();
  ASSERT_TRUE(testing::WaitUntil([&] { return mounted_->Status().graduation == "failed"; },
                                 std::chrono::seconds(60)))
      << mounted_->Status().ToJson().dump();
  EXPECT_FALSE(mounted_->Status().graduated);
  EXPECT_FALSE(fs::exists(CopyDir()));
  auto failures = ReadFile(Graduated() + "/.failures-sha256-" + std::string(64, 'c'));
  ASSERT_TRUE(failures.ok()) << failures.status();
  EXPECT_EQ(*failures, "1\n");
  for (const auto& e : fs::directory_iterator(Graduated())) {
    EXPECT_EQ(e.path().filename().string().rfind(".failures-", 0), 0u) << e.path();
  }
  EXPECT_NE(MountSource(mnt).find(config_.erofs.dir + "/images/"), std::string::npos)
      << MountSource(mnt);
  // Still lazy: its spans stay in the cache and serve the tree without the registry.
  fault_->SetFailing(true);
  CompareWithSource(g_shared->Sub("src"), mnt, true);
  EXPECT_EQ(mounted_->Status().reader.verify_errors, 0u);
}

// What the daemon does with a zTOC descriptor: exact size, digest checked before parsing, the
// zTOC must describe this layer.
TEST(SociLayerOpenTest, TheZtocIsVerifiedBeforeItIsUsed) {
  const bool own = g_layer == nullptr;
  if (own) BuildLayer();
  ASSERT_NE(g_layer, nullptr);
  struct Cleanup {
    bool own;
    ~Cleanup() {
      if (!own) return;
      delete g_layer;
      delete g_shared;
      g_layer = nullptr;
      g_shared = nullptr;
    }
  } cleanup{own};
  oci::Descriptor ztoc;
  ztoc.media_type = soci::kZtocMediaType;
  ztoc.digest = g_layer->ztoc_digest;
  ztoc.size = static_cast<int64_t>(g_layer->ztoc_bytes.size());
  // Through the layer descriptor's annotations, as persisted with a snapshot.
  std::map<std::string, std::string> annotations;
  soci::AddZtocAnnotations(ztoc, annotations);
  auto recorded = soci::ZtocFromAnnotations(annotations);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  ASSERT_TRUE(recorded->has_value());
  EXPECT_EQ((*recorded)->digest, ztoc.digest);
  EXPECT_EQ((*recorded)->size, ztoc.size);
  auto none = soci::ZtocFromAnnotations({});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  annotations[soci::kZtocSizeAnnotation] = "-1";
  EXPECT_EQ(soci::ZtocFromAnnotations(annotations).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto good = NewStringBlobReader(g_layer->ztoc_bytes);
  auto index = soci::OpenSociLayerIndex(*good, ztoc, g_layer->gzip.size());
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->format(), format::LayerFormat::kSoci);
  EXPECT_EQ(index->inode_count(), g_layer->index->inode_count());

  std::string flipped = g_layer->ztoc_bytes;
  flipped[flipped.size() / 2] ^= 0x01;
  auto bad = NewStringBlobReader(flipped);
  auto refused = soci::OpenSociLayerIndex(*bad, ztoc, g_layer->gzip.size());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(refused.status().message().find("does not match its digest"), std::string::npos)
      << refused.status();

  auto other_layer = soci::OpenSociLayerIndex(*good, ztoc, g_layer->gzip.size() + 1);
  EXPECT_EQ(other_layer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(other_layer.status().message().find("describes a"), std::string::npos)
      << other_layer.status();

  oci::Descriptor huge = ztoc;
  huge.size = int64_t{1} << 40;
  EXPECT_EQ(soci::OpenSociLayerIndex(*good, huge, g_layer->gzip.size()).status().code(),
            absl::StatusCode::kResourceExhausted);
}

INSTANTIATE_TEST_SUITE_P(Backends, SociLayerTest, ::testing::Values("fuse", "erofs"),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(Backends, SociErofsTest, ::testing::Values("erofs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lazypull
