// FUSE layer file system tests (label root): a real eStargz blob built in the test from a
// real directory tree (GNU tar -> lazypull's eStargz writer), indexed by EstargzReader, mounted
// with libfuse3, and compared with the source tree byte for byte, attribute for attribute.
// Fault injection goes through FaultBlobReader (the registry seam).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "fetcher/cache/chunk_cache.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/layer_index_builder.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fetcher/tar/tar_scanner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mount/backend.h"
#include "mount/fuse/fuse_backend.h"
#include "mount/fuse/stale_mounts.h"
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
using ::lazypull::testing::WaitUntil;
using ::lazypull::testing::WriteFile;
using ::testing::HasSubstr;

constexpr uint64_t kChunkSize = 256 << 10;

void SetMtime(const std::string& path, int64_t sec, long nsec) {
  timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// The source tree of the layer. Whiteout markers are regular files, as in an OCI layer tar.
void BuildSourceTree(const std::string& src) {
  fs::create_directories(src + "/dir/sub");
  fs::create_directories(src + "/private");
  fs::create_directories(src + "/deleted");
  fs::create_directories(src + "/opq");
  MustWrite(src + "/small.txt", "hello lazypull\n");
  MustWrite(src + "/empty", "");
  MustWrite(src + "/big1m.bin", RandomBytes(1 << 20, 1));
  MustWrite(src + "/multi.bin", RandomBytes(3 * kChunkSize + 1234, 2), 0755);
  MustWrite(src + "/dir/sub/deep.txt", std::string(10000, 'd'), 0600);
  MustWrite(src + "/holes.bin",
            RandomBytes(10000, 3) + std::string(200000, '\0') + RandomBytes(10000, 4));
  MustWrite(src + "/dir/setuid", "#!/bin/sh\n", 04755);
  MustWrite(src + "/private/owned", "owned by 1234:5678\n", 0640);
  ASSERT_EQ(chown((src + "/private/owned").c_str(), 1234, 5678), 0);
  ASSERT_EQ(chown((src + "/private").c_str(), 1234, 5678), 0);
  ASSERT_EQ(chmod((src + "/private").c_str(), 0750), 0);
  ASSERT_EQ(setxattr((src + "/small.txt").c_str(), "user.color", "blue", 4, 0), 0);
  ASSERT_EQ(setxattr((src + "/dir").c_str(), "user.tag", "a\0b", 3, 0), 0);
  ASSERT_EQ(symlink("small.txt", (src + "/link").c_str()), 0);
  ASSERT_EQ(symlink("/nonexistent/target", (src + "/dir/dangling").c_str()), 0);
  ASSERT_EQ(link((src + "/big1m.bin").c_str(), (src + "/dir/hardlink.bin").c_str()), 0);
  ASSERT_EQ(mkfifo((src + "/fifo").c_str(), 0644), 0);
  ASSERT_EQ(mknod((src + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  MustWrite(src + "/deleted/.wh.gone", "");
  MustWrite(src + "/opq/.wh..wh..opq", "");
  MustWrite(src + "/opq/keep", "kept\n");
  // Timestamps with nanoseconds, leaves first so directories keep theirs.
  int64_t t = 1700000000;
  for (const char* p :
       {"/small.txt", "/empty", "/holes.bin", "/big1m.bin", "/multi.bin", "/dir/sub/deep.txt",
        "/dir/setuid", "/private/owned", "/link", "/dir/dangling", "/fifo", "/null",
        "/deleted/.wh.gone", "/opq/.wh..wh..opq", "/opq/keep"}) {
    SetMtime(src + p, t++, 123456789);
  }
  for (const char* p : {"/dir/sub", "/dir", "/private", "/deleted", "/opq", ""}) {
    SetMtime(src + p, t++, 987654321);
  }
}

struct Blob {
  format::LayerFormat format = format::LayerFormat::kEstargz;
  std::string path;
  Digest toc_digest;                               // eStargz
  std::map<std::string, std::string> annotations;  // zstd:chunked
};

// GNU tar (pax: nanosecond times, xattrs) of the source tree.
std::string BuildTar(const std::string& src, const std::string& work) {
  std::string tar_path = work + "/layer.tar";
  auto r = RunCommand({"tar", "--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner",
                       "--sort=name", "-C", src, "-cf", tar_path, "."});
  EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->output : r.status().ToString());
  return tar_path;
}

// The tar -> zstd:chunked through lazypull's writer (nanosecond mtimes, hole chunks).
Blob BuildZstdChunked(const std::string& tar_path, const std::string& work) {
  auto tar = NewFileBlobReader(tar_path);
  EXPECT_TRUE(tar.ok()) << tar.status();
  auto index = tar::ScanTar(**tar);
  EXPECT_TRUE(index.ok()) << index.status();
  Blob blob{format::LayerFormat::kZstdChunked, work + "/layer.zstd", {}, {}};
  auto sink = convert::NewFileBlobSink(blob.path);
  EXPECT_TRUE(sink.ok()) << sink.status();
  convert::ZstdChunkedOptions options;
  options.max_chunk_size = kChunkSize;
  auto result = convert::WriteZstdChunked(**tar, *index, options, **sink);
  EXPECT_TRUE(result.ok()) << result.status();
  if (result.ok()) blob.annotations = result->Annotations();
  return blob;
}

// The tar -> eStargz through lazypull's writer.
Blob BuildEstargz(const std::string& tar_path, const std::string& work) {
  auto tar = NewFileBlobReader(tar_path);
  EXPECT_TRUE(tar.ok()) << tar.status();
  auto index = tar::ScanTar(**tar);
  EXPECT_TRUE(index.ok()) << index.status();
  Blob blob{format::LayerFormat::kEstargz, work + "/layer.estargz", {}, {}};
  auto sink = convert::NewFileBlobSink(blob.path);
  EXPECT_TRUE(sink.ok()) << sink.status();
  convert::EstargzOptions options;
  options.chunk_size = kChunkSize;
  options.prioritized_files = {"small.txt", "dir/sub/deep.txt"};
  auto result = convert::WriteEstargz(**tar, *index, options, **sink);
  EXPECT_TRUE(result.ok()) << result.status();
  if (result.ok()) blob.toc_digest = result->toc_digest;
  return blob;
}

// One mounted layer with everything it owns.
struct Mounted {
  std::shared_ptr<FaultBlobReader> blob;
  std::shared_ptr<const format::LayerIndex> index;
  std::unique_ptr<ChunkCache> cache;
  std::shared_ptr<LayerReader> reader;
  std::unique_ptr<mount::MountedLayer> mount;
  uint64_t index_bytes = 0;  // bytes read to build the index (footer + TOC)
  std::string dir;
};

class FuseLayerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new TempDir("lazypull-fuse-src");
    BuildSourceTree(shared_->Sub("src"));
    std::string tar = BuildTar(shared_->Sub("src"), shared_->path());
    blob_ = new Blob(BuildEstargz(tar, shared_->path()));
    zstd_blob_ = new Blob(BuildZstdChunked(tar, shared_->path()));
  }
  static void TearDownTestSuite() {
    delete blob_;
    delete zstd_blob_;
    delete shared_;
  }

  std::string Src() const { return shared_->Sub("src"); }

  // Indexes the blob, opens a fresh cache and mounts the layer at <tmp>/mnt.
  std::unique_ptr<Mounted> MountLayer(LayerReaderOptions options, std::string cache_dir = "",
                                      const Blob* blob = nullptr,
                                      uint64_t cache_max_bytes = uint64_t{1} << 30) {
    if (blob == nullptr) blob = blob_;
    auto m = std::make_unique<Mounted>();
    auto file = NewFileBlobReader(blob->path);
    EXPECT_TRUE(file.ok());
    m->blob = std::make_shared<FaultBlobReader>(std::move(*file));
    auto index = blob->format == format::LayerFormat::kEstargz
                     ? format::ReadEstargzIndex(*m->blob, blob->toc_digest)
                     : format::ReadZstdChunkedIndex(*m->blob, blob->annotations);
    EXPECT_TRUE(index.ok()) << index.status();
    if (!index.ok()) return nullptr;
    m->index_bytes = m->blob->bytes();
    m->index = std::make_shared<const format::LayerIndex>(std::move(*index));
    CacheConfig cc;
    cc.dir = cache_dir.empty() ? tmp_.Sub("cache") : cache_dir;
    cc.max_bytes = cache_max_bytes;
    auto cache = ChunkCache::Open(cc);
    EXPECT_TRUE(cache.ok()) << cache.status();
    m->cache = std::move(*cache);
    auto reader =
        LayerReader::Create("sha256:testlayer", m->index, m->blob, m->cache.get(), options);
    EXPECT_TRUE(reader.ok()) << reader.status();
    m->reader = std::move(*reader);
    m->dir = tmp_.Sub("mnt");
    fs::create_directories(m->dir);
    mount::MountConfig config;
    auto backend = mount::NewLayerMountBackend(config);
    EXPECT_TRUE(backend.ok());
    auto mounted = (*backend)->Mount({"sha256:testlayer", m->reader, m->dir});
    EXPECT_TRUE(mounted.ok()) << mounted.status();
    if (!mounted.ok()) return nullptr;
    m->mount = std::move(*mounted);
    return m;
  }

  // No prefetch, background fetch nor cross-file readahead: tests count exact bytes.
  static LayerReaderOptions Lazy() {
    LayerReaderOptions o;
    o.prefetch = false;
    o.background_fetch = false;
    o.readahead_window = 0;
    o.background_silence = std::chrono::milliseconds(0);
    o.fetch_timeout = std::chrono::milliseconds(5000);
    return o;
  }

  TempDir tmp_{"lazypull-fuse"};
  static TempDir* shared_;
  static Blob* blob_;
  static Blob* zstd_blob_;
};

TempDir* FuseLayerTest::shared_ = nullptr;
Blob* FuseLayerTest::blob_ = nullptr;
Blob* FuseLayerTest::zstd_blob_ = nullptr;

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

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

// Compares every entry of the source tree with the mounted layer. eStargz TOCs record whole
// seconds (RFC 3339, rounded by the writer); zstd:chunked records nanoseconds.
size_t CompareWithSource(const std::string& src, const std::string& mnt, bool nanoseconds) {
  size_t compared = 0;
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator();
       ++it) {
    std::string rel = fs::relative(it->path(), src).string();
    std::string name = it->path().filename().string();
    if (name.rfind(".wh.", 0) == 0) continue;  // checked in their overlay form
    SCOPED_TRACE(rel);
    std::string a = src + "/" + rel, b = mnt + "/" + rel;
    struct stat sa, sb;
    EXPECT_EQ(lstat(a.c_str(), &sa), 0);
    if (lstat(b.c_str(), &sb) != 0) {
      ADD_FAILURE() << "missing in the mount: " << strerror(errno);
      continue;
    }
    EXPECT_EQ(sa.st_mode, sb.st_mode);
    EXPECT_EQ(sa.st_uid, sb.st_uid);
    EXPECT_EQ(sa.st_gid, sb.st_gid);
    if (nanoseconds) {
      EXPECT_EQ(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
      EXPECT_EQ(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec);
    } else {
      EXPECT_EQ(sa.st_mtim.tv_sec + (sa.st_mtim.tv_nsec >= 500000000 ? 1 : 0), sb.st_mtim.tv_sec);
      EXPECT_EQ(sb.st_mtim.tv_nsec, 0);
    }
    if (!S_ISDIR(sa.st_mode)) {
      EXPECT_EQ(sa.st_nlink, sb.st_nlink);
    }
    if (S_ISREG(sa.st_mode)) {
      EXPECT_EQ(sa.st_size, sb.st_size);
      auto want = ReadFile(a);
      auto got = ReadAll(b);
      EXPECT_TRUE(got.ok()) << got.status();
      if (got.ok()) {
        EXPECT_TRUE(*want == *got) << "content differs";
      }
    }
    if (S_ISLNK(sa.st_mode)) {
      EXPECT_EQ(fs::read_symlink(a), fs::read_symlink(b));
    }
    if (S_ISCHR(sa.st_mode)) {
      EXPECT_EQ(sa.st_rdev, sb.st_rdev);
    }
    if (rel != "opq") {
      EXPECT_EQ(Xattrs(a), Xattrs(b));
    }
    ++compared;
  }
  return compared;
}

// Whiteouts, opaque dirs, hidden landmarks, hardlinks: the overlay view of the layer.
void CheckOverlayView(const std::string& src, const std::string& mnt) {
  struct stat h1, h2;
  ASSERT_EQ(stat((mnt + "/big1m.bin").c_str(), &h1), 0);
  ASSERT_EQ(stat((mnt + "/dir/hardlink.bin").c_str(), &h2), 0);
  EXPECT_EQ(h1.st_ino, h2.st_ino);
  EXPECT_EQ(h1.st_nlink, 2u);
  struct stat wh;
  ASSERT_EQ(lstat((mnt + "/deleted/gone").c_str(), &wh), 0);
  EXPECT_TRUE(S_ISCHR(wh.st_mode));
  EXPECT_EQ(wh.st_rdev, makedev(0, 0));
  EXPECT_EQ(List(mnt + "/deleted"), std::set<std::string>{"gone"});
  EXPECT_EQ(List(mnt + "/opq"), std::set<std::string>{"keep"});
  auto opq = Xattrs(mnt + "/opq");
  EXPECT_EQ(opq["trusted.overlay.opaque"], "y");
  EXPECT_EQ(opq["user.overlay.opaque"], "y");
  auto top = List(mnt);
  EXPECT_EQ(top.count(".prefetch.landmark"), 0u);
  EXPECT_EQ(top.count("stargz.index.json"), 0u);
  EXPECT_EQ(top, List(src));
}

TEST_F(FuseLayerTest, TreeMatchesSourceInOverlayView) {
  auto m = MountLayer(Lazy());
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(CompareWithSource(Src(), m->dir, /*nanoseconds=*/false), 19u);
  CheckOverlayView(Src(), m->dir);
  // Read-only, sensible statfs.
  EXPECT_LT(open((m->dir + "/small.txt").c_str(), O_WRONLY), 0);
  EXPECT_EQ(errno, EROFS);
  struct statvfs sv;
  ASSERT_EQ(statvfs(m->dir.c_str(), &sv), 0);
  EXPECT_EQ(sv.f_bsize, 4096u);
  EXPECT_EQ(sv.f_files, m->index->inode_count());
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  // Mount options: read-only FUSE with allow_other and default_permissions.
  auto mounts = ReadFile("/proc/self/mountinfo");
  ASSERT_TRUE(mounts.ok());
  std::string line;
  for (std::string_view rest = *mounts; !rest.empty();) {
    size_t nl = rest.find('\n');
    std::string_view l = rest.substr(0, nl);
    if (l.find(" " + m->dir + " ") != std::string_view::npos) line = std::string(l);
    rest = nl == std::string_view::npos ? "" : rest.substr(nl + 1);
  }
  EXPECT_THAT(line, HasSubstr(" ro,"));
  EXPECT_THAT(line, HasSubstr("fuse.lazypull lazypull:sha256:testlayer"));
  EXPECT_THAT(line, HasSubstr("allow_other"));
  EXPECT_THAT(line, HasSubstr("default_permissions"));
}

TEST_F(FuseLayerTest, ZstdChunkedTreeMatchesSourceToTheNanosecond) {
  auto m = MountLayer(Lazy(), "", zstd_blob_);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(CompareWithSource(Src(), m->dir, /*nanoseconds=*/true), 19u);
  CheckOverlayView(Src(), m->dir);
  // The zero run of holes.bin is a hole chunk: never fetched, no blocks.
  auto ino = m->index->LookupPath("holes.bin");
  ASSERT_TRUE(ino.has_value());
  bool has_hole = false;
  for (const auto& c : m->index->Chunks(*ino)) {
    has_hole |= c.compression == format::ChunkCompression::kZeros;
  }
  EXPECT_TRUE(has_hole);
  struct stat st;
  ASSERT_EQ(stat((m->dir + "/holes.bin").c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, st.st_size);
}

TEST_F(FuseLayerTest, NonRootReaderSeesNormalPermissions) {
  auto m = MountLayer(Lazy());
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(chmod(tmp_.path().c_str(), 0755), 0);
  auto ok = RunCommand({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat",
                        m->dir + "/small.txt"});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->exit_code, 0) << ok->output;
  EXPECT_EQ(ok->output, "hello lazypull\n");
  auto denied = RunCommand({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat",
                            m->dir + "/private/owned"});
  ASSERT_TRUE(denied.ok());
  EXPECT_NE(denied->exit_code, 0);
  EXPECT_THAT(denied->output, HasSubstr("Permission denied"));
}

TEST_F(FuseLayerTest, OverlayOverFuseLowerdir) {
  auto m = MountLayer(Lazy());
  ASSERT_NE(m, nullptr);
  // A base layer below ours holding what our whiteouts delete.
  std::string base = tmp_.Sub("base"), upper_fs = tmp_.Sub("upperfs"), merged = tmp_.Sub("merged");
  MustWrite(base + "/deleted/gone", "should be hidden\n");
  MustWrite(base + "/deleted/other", "stays\n");
  MustWrite(base + "/opq/old", "hidden by the opaque dir\n");
  fs::create_directories(upper_fs);
  fs::create_directories(merged);
  ASSERT_EQ(::mount("tmpfs", upper_fs.c_str(), "tmpfs", 0, "size=64m"), 0);
  fs::create_directories(upper_fs + "/upper");
  fs::create_directories(upper_fs + "/work");
  std::string opts = "lowerdir=" + m->dir + ":" + base + ",upperdir=" + upper_fs +
                     "/upper,workdir=" + upper_fs + "/work";
  ASSERT_EQ(::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()), 0) << strerror(errno);
  EXPECT_FALSE(fs::exists(merged + "/deleted/gone"));
  EXPECT_TRUE(fs::exists(merged + "/deleted/other"));
  EXPECT_EQ(List(merged + "/opq"), std::set<std::string>{"keep"});
  EXPECT_EQ(*ReadFile(merged + "/big1m.bin"), *ReadFile(Src() + "/big1m.bin"));
  // Copy-up: the write lands in the upper dir; the lazy layer is unchanged.
  ASSERT_TRUE(WriteFile(merged + "/small.txt", "changed\n").ok());
  EXPECT_EQ(*ReadFile(merged + "/small.txt"), "changed\n");
  EXPECT_EQ(*ReadFile(upper_fs + "/upper/small.txt"), "changed\n");
  EXPECT_EQ(*ReadFile(m->dir + "/small.txt"), "hello lazypull\n");
  // Deleting a lower file leaves a whiteout in the upper dir.
  ASSERT_TRUE(fs::remove(merged + "/multi.bin"));
  struct stat st;
  ASSERT_EQ(lstat((upper_fs + "/upper/multi.bin").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(umount2(merged.c_str(), 0), 0) << strerror(errno);
  EXPECT_EQ(umount2(upper_fs.c_str(), 0), 0);
}

// Sum of the compressed lengths of a file's chunks.
uint64_t CompressedBytes(const format::LayerIndex& index, const std::string& path) {
  auto ino = index.LookupPath(path);
  uint64_t n = 0;
  for (const auto& c : index.Chunks(*ino)) n += c.compressed_length;
  return n;
}

TEST_F(FuseLayerTest, LazyMountFetchesOnlyWhatIsRead) {
  LayerReaderOptions o = Lazy();
  o.prefetch = true;
  auto m = MountLayer(o);
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(m->index->prefetch_range().has_value());
  const uint64_t prefetch = m->index->prefetch_range()->length;
  // Building the index read the footer and the TOC only.
  EXPECT_LE(m->index_bytes, m->blob->Size() - m->index->data_range().length + 4096);
  EXPECT_EQ(m->blob->bytes(), m->index_bytes);
  // Listing and stat never touch the blob.
  for (const auto& e : fs::recursive_directory_iterator(m->dir)) (void)e.symlink_status();
  EXPECT_EQ(m->blob->bytes(), m->index_bytes);
  // The prefetch is one request of the prioritized range.
  uint64_t before = m->blob->requests();
  ASSERT_TRUE(m->reader->Prefetch().ok());
  EXPECT_EQ(m->blob->requests(), before + 1);
  EXPECT_EQ(m->blob->bytes(), m->index_bytes + prefetch);
  EXPECT_EQ(*ReadFile(m->dir + "/small.txt"), "hello lazypull\n");  // prefetched: no fetch
  EXPECT_EQ(m->blob->bytes(), m->index_bytes + prefetch);
  // Reading one 1 MiB file fetches its chunks, merged into one request.
  before = m->blob->requests();
  auto data = ReadFile(m->dir + "/big1m.bin");
  ASSERT_TRUE(data.ok());
  EXPECT_TRUE(*data == *ReadFile(Src() + "/big1m.bin"));
  const uint64_t own = CompressedBytes(*m->index, "big1m.bin");
  EXPECT_GE(m->blob->bytes() - m->index_bytes - prefetch, own);
  EXPECT_LE(m->blob->bytes() - m->index_bytes - prefetch, own + (64 << 10));
  EXPECT_EQ(m->blob->requests() - before, 1u);  // 4 chunks, one request (readahead)
  LayerReaderStats stats = m->reader->Stats();
  EXPECT_EQ(stats.bytes_fetched, m->blob->bytes() - m->index_bytes);
  EXPECT_LT(stats.local_chunks, stats.total_chunks);
  // The hardlink is the same inode: its bytes come from the page cache / chunk cache.
  uint64_t after_big = m->blob->bytes();
  EXPECT_TRUE(*ReadFile(m->dir + "/dir/hardlink.bin") == *data);
  EXPECT_EQ(m->blob->bytes(), after_big);
}

TEST_F(FuseLayerTest, CorruptByteIsEioAndNeverCached) {
  auto m = MountLayer(Lazy());
  ASSERT_NE(m, nullptr);
  auto ino = m->index->LookupPath("multi.bin");
  const format::Chunk& chunk = m->index->Chunks(*ino)[1];
  m->blob->CorruptByte(chunk.compressed_offset + chunk.compressed_length / 2);
  int fd = open((m->dir + "/multi.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);  // no kernel readahead
  char buf[4096];
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), 4096);  // chunk 0 is intact
  // The failure is logged as JSON naming the layer, the file and the chunk.
  std::string log_path = tmp_.Sub("stderr.log");
  int saved_stderr = dup(2);
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(log_fd, 0);
  dup2(log_fd, 2);
  errno = 0;
  ssize_t got = pread(fd, buf, sizeof(buf), kChunkSize + 10);
  int err = errno;
  dup2(saved_stderr, 2);
  close(saved_stderr);
  close(log_fd);
  EXPECT_EQ(got, -1);
  EXPECT_EQ(err, EIO);
  close(fd);
  std::string log = *ReadFile(log_path);
  EXPECT_THAT(log, HasSubstr(R"("msg":"layer read failed")"));
  EXPECT_THAT(log, HasSubstr(R"("layer":"sha256:testlayer")"));
  EXPECT_THAT(log, HasSubstr(R"("file":"multi.bin")"));
  EXPECT_THAT(log, HasSubstr(R"("chunk_offset":)" + std::to_string(chunk.compressed_offset)));
  EXPECT_FALSE(m->cache->Contains(chunk.digest_value()));
  EXPECT_GE(m->reader->Stats().verify_errors, 1u);
  // With the fault gone the same read succeeds (nothing bad was cached, in the kernel either).
  m->blob->CorruptByte(std::nullopt);
  fd = open((m->dir + "/multi.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string want = ReadFile(Src() + "/multi.bin")->substr(kChunkSize + 10, 4096);
  ASSERT_EQ(pread(fd, buf, sizeof(buf), kChunkSize + 10), 4096) << strerror(errno);
  EXPECT_EQ(std::string(buf, 4096), want);
  close(fd);
  EXPECT_TRUE(WaitUntil([&] { return m->cache->Contains(chunk.digest_value()); }));
}

TEST_F(FuseLayerTest, StalledRegistryFailsUncachedReadsWithinTimeout) {
  LayerReaderOptions o = Lazy();
  o.fetch_timeout = std::chrono::milliseconds(1000);
  auto m = MountLayer(o);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(*ReadFile(m->dir + "/small.txt"), "hello lazypull\n");  // now cached
  // Failing registry: EIO for uncached data from the failed fetch itself, not from waiting
  // out fetch_timeout (the reader counts which one ended the read).
  m->blob->SetFailing(true);
  const LayerReaderStats before = m->reader->Stats();
  EXPECT_FALSE(ReadAll(m->dir + "/dir/sub/deep.txt").ok());
  const LayerReaderStats failed = m->reader->Stats();
  EXPECT_GT(failed.fetch_errors, before.fetch_errors);
  EXPECT_EQ(failed.timeouts, before.timeouts);
  m->blob->SetFailing(false);
  // Stalled registry: EIO after the timeout, not a hang; cached files still read.
  m->blob->SetBlocked(true);
  auto start = std::chrono::steady_clock::now();
  int fd = open((m->dir + "/multi.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[100];
  errno = 0;
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), -1);
  EXPECT_EQ(errno, EIO);
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, std::chrono::milliseconds(900));
  EXPECT_LT(waited, std::chrono::seconds(5));
  close(fd);
  // Cached data still reads (the kernel's copy dropped first: served by the chunk cache).
  fd = open((m->dir + "/small.txt").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  const uint64_t hits = m->reader->Stats().cache_hits;
  ASSERT_EQ(pread(fd, buf, sizeof(buf), 0), 15) << strerror(errno);
  EXPECT_EQ(std::string(buf, 15), "hello lazypull\n");
  EXPECT_EQ(m->reader->Stats().cache_hits, hits + 1);
  close(fd);
  EXPECT_GE(m->reader->Stats().timeouts, 1u);
  m->blob->SetBlocked(false);
}

TEST_F(FuseLayerTest, BackgroundFetchMakesLayerFullyLocal) {
  LayerReaderOptions o = Lazy();
  o.prefetch = true;
  o.background_fetch = true;
  o.background_request_bytes = 512 << 10;
  auto m = MountLayer(o);
  ASSERT_NE(m, nullptr);
  m->mount->StartBackground();
  ASSERT_TRUE(m->reader->WaitBackground(std::chrono::seconds(30)));
  LayerReaderStats s = m->reader->Stats();
  EXPECT_EQ(s.background, "done");
  EXPECT_EQ(s.prefetch, "done");
  EXPECT_EQ(s.local_chunks, s.total_chunks);
  EXPECT_DOUBLE_EQ(s.fetched_percent(), 100.0);
  // Every byte fetched at most once (each chunk's member is fetched once).
  EXPECT_LE(s.bytes_fetched, m->index->data_range().length);
  // Now the registry can vanish: every file still reads.
  m->blob->SetFailing(true);
  for (const auto& e : fs::recursive_directory_iterator(m->dir)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    std::string rel = fs::relative(e.path(), m->dir).string();
    auto got = ReadAll(e.path().string());
    ASSERT_TRUE(got.ok()) << rel << ": " << got.status();
    EXPECT_TRUE(*got == *ReadFile(Src() + "/" + rel)) << rel;
  }
  nlohmann::json j = m->mount->Status().ToJson();
  EXPECT_EQ(j["layer"], "sha256:testlayer");
  EXPECT_EQ(j["backend"], "fuse");
  EXPECT_EQ(j["mounted"], true);
  EXPECT_EQ(j["fetched_percent"], 100.0);
  EXPECT_EQ(j["bytes_fetched"], s.bytes_fetched);
  EXPECT_TRUE(j.contains("cache_hits"));
}

TEST_F(FuseLayerTest, ConcurrentReadersOfOneChunkCauseOneFetch) {
  LayerReaderOptions o = Lazy();
  o.readahead_bytes = 0;
  auto m = MountLayer(o);
  ASSERT_NE(m, nullptr);
  auto ino = m->index->LookupPath("multi.bin");
  m->blob->SetBlocked(true);
  const uint64_t before = m->blob->requests();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::string want = ReadFile(Src() + "/multi.bin")->substr(kChunkSize, 1000);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      std::string buf(1000, '\0');
      auto n = m->reader->Read(*ino, kChunkSize + 0 * i, buf.data(), buf.size());
      if (n.ok() && *n == 1000 && buf == want) ++ok;
    });
  }
  m->blob->WaitBlocked(1);
  // Every reader has missed and joined the one fetch (counted before it waits).
  const bool queued = WaitUntil([&] { return m->reader->Stats().cache_misses >= 8; });
  m->blob->SetBlocked(false);
  for (auto& t : threads) t.join();
  ASSERT_TRUE(queued) << m->reader->Stats().cache_misses << " readers queued";
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(m->blob->requests() - before, 1u);
  LayerReaderStats s = m->reader->Stats();
  EXPECT_EQ(s.chunks_fetched, 1u);
  EXPECT_EQ(s.cache_misses, 8u);
  EXPECT_EQ(s.fetch_waits, 7u);
}

// A cache far smaller than the layer keeps evicting; every read still returns verified bytes
// (chunks larger than the whole cache are served without being stored).
TEST_F(FuseLayerTest, TinyCacheStillServesEveryFile) {
  auto m = MountLayer(Lazy(), "", nullptr, /*cache_max_bytes=*/300 << 10);
  ASSERT_NE(m, nullptr);
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& e : fs::recursive_directory_iterator(m->dir)) {
      if (!e.is_regular_file() || e.is_symlink()) continue;
      std::string rel = fs::relative(e.path(), m->dir).string();
      int fd = open(e.path().c_str(), O_RDONLY);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
      close(fd);
      auto got = ReadAll(e.path().string());
      ASSERT_TRUE(got.ok()) << rel << ": " << got.status();
      EXPECT_TRUE(*got == *ReadFile(Src() + "/" + rel)) << rel;
    }
  }
  EXPECT_GT(m->cache->stats().evictions, 0u);
  EXPECT_LE(m->cache->stats().bytes_stored, 300u << 10);
  EXPECT_EQ(m->reader->Stats().verify_errors, 0u);
}

TEST_F(FuseLayerTest, ChunkCacheSurvivesRemount) {
  std::string cache_dir = tmp_.Sub("persistent-cache");
  {
    auto m = MountLayer(Lazy(), cache_dir);
    ASSERT_NE(m, nullptr);
    EXPECT_TRUE(*ReadFile(m->dir + "/big1m.bin") == *ReadFile(Src() + "/big1m.bin"));
  }
  auto m = MountLayer(Lazy(), cache_dir);
  ASSERT_NE(m, nullptr);
  EXPECT_GE(m->reader->Stats().local_bytes, 1u << 20);
  m->blob->SetFailing(true);
  EXPECT_TRUE(*ReadFile(m->dir + "/big1m.bin") == *ReadFile(Src() + "/big1m.bin"));
  EXPECT_GE(m->reader->Stats().cache_hits, 1u);
}

// > 4 GiB sparse file: a zstd:chunked-style index with a hole chunk and one data frame.
TEST(FuseLayerLargeFileTest, SparseFileBeyond4GiB) {
  TempDir tmp("lazypull-fuse-large");
  const std::string tail = "the end of a very large file\n";
  auto frame = codec::ZstdCompress(tail);
  ASSERT_TRUE(frame.ok());
  const uint64_t hole = (uint64_t{5} << 30) + 12345;
  format::LayerIndexBuilder b(format::LayerFormat::kZstdChunked, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  meta.mtime_sec = 1600000000;
  meta.mtime_nsec = 42;
  format::Chunk zeros;
  zeros.compression = format::ChunkCompression::kZeros;
  zeros.file_offset = 0;
  zeros.length = hole;
  zeros.has_digest = true;  // never verified: holes are not fetched
  format::Chunk data;
  data.compression = format::ChunkCompression::kZstdFrame;
  data.compressed_offset = 0;
  data.compressed_length = frame->size();
  data.file_offset = hole;
  data.length = tail.size();
  std::string raw = Digest::Of(tail).hex();
  for (int i = 0; i < 32; ++i) data.digest[i] = std::stoi(raw.substr(2 * i, 2), nullptr, 16);
  data.has_digest = true;
  ASSERT_TRUE(b.AddRegular("huge.img", meta, hole + tail.size(), {zeros, data}).ok());
  auto index = b.Finish(Digest::Of("toc"), frame->size(), frame->size());
  ASSERT_TRUE(index.ok()) << index.status();
  auto blob = std::make_shared<FaultBlobReader>(NewStringBlobReader(*frame));
  CacheConfig cc;
  cc.dir = tmp.Sub("cache");
  auto cache = ChunkCache::Open(cc);
  ASSERT_TRUE(cache.ok());
  LayerReaderOptions o;
  o.background_fetch = false;
  auto reader =
      LayerReader::Create("large", std::make_shared<const format::LayerIndex>(std::move(*index)),
                          blob, cache->get(), o);
  ASSERT_TRUE(reader.ok());
  fs::create_directories(tmp.Sub("mnt"));
  auto mounted = mount::MountFuseLayer({"large", std::move(*reader), tmp.Sub("mnt")}, {});
  ASSERT_TRUE(mounted.ok()) << mounted.status();
  std::string path = tmp.Sub("mnt") + "/huge.img";
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), hole + tail.size());
  EXPECT_EQ(st.st_blocks, 8);  // only the data frame occupies space
  EXPECT_EQ(st.st_mtim.tv_nsec, 42);
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string buf(tail.size() + 10, 'x');
  ASSERT_EQ(pread(fd, buf.data(), buf.size(), hole - 10), static_cast<ssize_t>(buf.size()));
  EXPECT_EQ(buf, std::string(10, '\0') + tail);
  ASSERT_EQ(pread(fd, buf.data(), 4096 > buf.size() ? buf.size() : 4096, uint64_t{1} << 32),
            static_cast<ssize_t>(buf.size()));
  EXPECT_EQ(buf, std::string(buf.size(), '\0'));
  close(fd);
  EXPECT_EQ(blob->requests(), 1u);  // the hole was never fetched
  // A layer without xattrs: getxattr is answered by the kernel itself after the first call
  // (EOPNOTSUPP, "no xattr" to readers), listxattr is empty.
  for (int i = 0; i < 2; ++i) {
    char value[16];
    errno = 0;
    EXPECT_EQ(lgetxattr(path.c_str(), "trusted.overlay.metacopy", value, sizeof(value)), -1);
    EXPECT_EQ(errno, EOPNOTSUPP);
  }
  char names[64];
  EXPECT_EQ(llistxattr(path.c_str(), names, sizeof(names)), 0);
  // Directories open and list without OPENDIR round trips.
  EXPECT_EQ(List(tmp.Sub("mnt")), std::set<std::string>{"huge.img"});
}

// A FUSE daemon killed with SIGKILL leaves an ENOTCONN mount; the helper detaches it and a
// new mount on the same directory works.
TEST_F(FuseLayerTest, StaleMountFromCrashedDaemonIsDetached) {
  fs::create_directories(tmp_.Sub("mnt"));
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(ready[0]);
    auto m = MountLayer(Lazy());
    if (m == nullptr) _exit(1);
    (void)!write(ready[1], "r", 1);
    for (;;) pause();
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  EXPECT_EQ(*ReadFile(tmp_.Sub("mnt") + "/small.txt"), "hello lazypull\n");
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  EXPECT_TRUE(mount::IsStaleFuseMount(tmp_.Sub("mnt")));
  auto detached = mount::DetachStaleFuseMounts(tmp_.path());
  ASSERT_TRUE(detached.ok()) << detached.status();
  EXPECT_EQ(*detached, std::vector<std::string>{tmp_.Sub("mnt")});
  EXPECT_FALSE(mount::IsStaleFuseMount(tmp_.Sub("mnt")));
  // Remounting over a stale mount also detaches it first.
  auto m = MountLayer(Lazy());
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(*ReadFile(m->dir + "/small.txt"), "hello lazypull\n");
}

TEST_F(FuseLayerTest, UnmountOfBusyMountDoesNotHang) {
  auto m = MountLayer(Lazy());
  ASSERT_NE(m, nullptr);
  int fd = open((m->dir + "/small.txt").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(m->mount->Unmount().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_FALSE(m->mount->Status().mounted);
  char buf[10];
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), -1);  // connection aborted
  close(fd);
  auto mounts = mount::MountsUnder(m->dir);
  ASSERT_TRUE(mounts.ok());
  EXPECT_TRUE(mounts->empty());
}

}  // namespace
}  // namespace lazypull
