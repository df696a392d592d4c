// fuse_read_bench: read throughput and tree walks through a lazypull FUSE layer mount vs the
// same files on the native file system, as ratios measured in the same run (run as root).
//
// Builds a source tree (one --file_mb MiB file plus --small_files 4 KiB files in 10 dirs),
// converts it to eStargz with lazypull's writer, mounts it with the FUSE backend, lets the
// background fetch make it fully local (so no fetch is measured), then measures:
//   seq_read_page_cache:  sequential 1 MiB reads, kernel page cache warm on both sides
//                         (keep_cache: FUSE is not asked at all)
//   seq_read_chunk_cache: the FUSE file dropped from the page cache before each pass
//                         (POSIX_FADV_DONTNEED): every FUSE read is served by the daemon from
//                         the chunk cache; the native baseline stays page-cache warm
//   walk_cold / walk_warm: lstat of every entry (like `find -ls`) right after mounting, then
//                          again with the dentry/attribute caches warm
// Prints one JSON line per measurement: {"bench", "fuse", "native", "ratio" (=native time /
// fuse time, i.e. fuse throughput relative to native; >= 0.7 is the warm read target)}.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "base/logging.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fetcher/tar/tar_scanner.h"
#include "mount/backend.h"
#include "nlohmann/json.hpp"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  size_t file_mb = 128;
  size_t small_files = 1000;
  int passes = 3;
  std::string work_dir = "/tmp";
};

void Die(const std::string& what) {
  std::fprintf(stderr, "fuse_read_bench: %s\n", what.c_str());
  std::exit(1);
}

void WriteBytes(const std::string& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size()) Die("write " + path);
  std::fclose(f);
}

void BuildTree(const std::string& src, const Options& o) {
  std::mt19937_64 rng(7);
  std::string big(o.file_mb << 20, '\0');
  for (size_t i = 0; i + 8 <= big.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&big[i], &v, 8);
  }
  fs::create_directories(src);
  WriteBytes(src + "/big.bin", big);
  for (size_t i = 0; i < o.small_files; ++i) {
    std::string dir = src + "/d" + std::to_string(i % 10);
    fs::create_directories(dir);
    WriteBytes(dir + "/f" + std::to_string(i), big.substr(i * 4096 % (big.size() - 4096), 4096));
  }
}

// Reads `path` sequentially in 1 MiB blocks; returns seconds.
double ReadSeconds(const std::string& path, bool drop_page_cache) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die("open " + path);
  if (drop_page_cache) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::vector<char> buf(1 << 20);
  auto start = Clock::now();
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) Die("read " + path + ": " + strerror(errno));
    if (n == 0) break;
  }
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  close(fd);
  return s;
}

double WalkSeconds(const std::string& root) {
  auto start = Clock::now();
  size_t n = 0;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st;
    if (lstat(it->path().c_str(), &st) != 0) Die("lstat " + it->path().string());
    ++n;
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Best of `passes` runs of each side, alternating.
void Report(const std::string& name, int passes, const std::function<double()>& fuse,
            const std::function<double()>& native, double bytes) {
  double best_fuse = 1e30, best_native = 1e30;
  for (int i = 0; i < passes; ++i) {
    best_native = std::min(best_native, native());
    best_fuse = std::min(best_fuse, fuse());
  }
  nlohmann::json j = {{"bench", name},
                      {"fuse_seconds", best_fuse},
                      {"native_seconds", best_native},
                      {"ratio", best_native / best_fuse}};
  if (bytes > 0) {
    j["fuse_MBps"] = bytes / best_fuse / 1e6;
    j["native_MBps"] = bytes / best_native / 1e6;
  }
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

int Run(const Options& o) {
  SetLogLevel(LogLevel::kWarn);
  std::string work = o.work_dir + "/lazypull-fuse-bench-XXXXXX";
  if (mkdtemp(work.data()) == nullptr) Die("mkdtemp");
  const std::string src = work + "/src", mnt = work + "/mnt";
  BuildTree(src, o);
  std::string cmd = "tar --format=pax --sort=name -C " + src + " -cf " + work + "/layer.tar .";
  if (std::system(cmd.c_str()) != 0) Die("tar");
  auto tar = NewFileBlobReader(work + "/layer.tar");
  if (!tar.ok()) Die(tar.status().ToString());
  auto tar_index = tar::ScanTar(**tar);
  if (!tar_index.ok()) Die(tar_index.status().ToString());
  auto sink = convert::NewFileBlobSink(work + "/layer.estargz");
  if (!sink.ok()) Die(sink.status().ToString());
  auto written = convert::WriteEstargz(**tar, *tar_index, {}, **sink);
  if (!written.ok()) Die(written.status().ToString());
  fs::remove(work + "/layer.tar");

  std::shared_ptr<BlobReader> blob;
  {
    auto b = NewFileBlobReader(work + "/layer.estargz");
    if (!b.ok()) Die(b.status().ToString());
    blob = std::move(*b);
  }
  auto index = format::ReadEstargzIndex(*blob, written->toc_digest);
  if (!index.ok()) Die(index.status().ToString());
  CacheConfig cc;
  cc.dir = work + "/cache";
  auto cache = ChunkCache::Open(cc);
  if (!cache.ok()) Die(cache.status().ToString());
  mount::MountConfig config;
  auto reader =
      LayerReader::Create("bench", std::make_shared<format::LayerIndex>(std::move(*index)), blob,
                          cache->get(), config.reader);
  if (!reader.ok()) Die(reader.status().ToString());
  std::shared_ptr<LayerReader> shared_reader = std::move(*reader);
  fs::create_directories(mnt);
  auto backend = mount::NewLayerMountBackend(config);
  auto mounted = (*backend)->Mount({"bench", shared_reader, mnt});
  if (!mounted.ok()) Die(mounted.status().ToString());

  // Cold walk right after mounting (nothing cached in the kernel yet) vs a native walk with
  // the source's dentries cold too (best effort: drop them first).
  {
    std::FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w");
    if (f) {
      std::fputs("2", f);
      std::fclose(f);
    }
    double native = WalkSeconds(src);
    double fuse = WalkSeconds(mnt);
    std::printf("%s\n", nlohmann::json({{"bench", "walk_cold"},
                                        {"entries", o.small_files + 12},
                                        {"fuse_seconds", fuse},
                                        {"native_seconds", native},
                                        {"ratio", native / fuse}})
                            .dump()
                            .c_str());
  }
  (*mounted)->StartBackground();
  if (!shared_reader->WaitBackground(std::chrono::minutes(10))) Die("background fetch timeout");
  Report(
      "walk_warm", o.passes, [&] { return WalkSeconds(mnt); }, [&] { return WalkSeconds(src); }, 0);
  const double bytes = static_cast<double>(o.file_mb << 20);
  ReadSeconds(mnt + "/big.bin", false);  // page cache warm on both sides
  ReadSeconds(src + "/big.bin", false);
  Report(
      "seq_read_page_cache", o.passes, [&] { return ReadSeconds(mnt + "/big.bin", false); },
      [&] { return ReadSeconds(src + "/big.bin", false); }, bytes);
  // The FUSE file leaves the kernel page cache each pass (the daemon serves every read from
  // the page-cached chunk files); the baseline stays page-cache warm: a conservative ratio.
  Report(
      "seq_read_chunk_cache", o.passes, [&] { return ReadSeconds(mnt + "/big.bin", true); },
      [&] { return ReadSeconds(src + "/big.bin", false); }, bytes);
  std::printf("%s\n", (*mounted)->Status().ToJson().dump().c_str());
  mounted->reset();
  fs::remove_all(work);
  return 0;
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) {
  lazypull::Options o;
  CLI::App app("lazypull FUSE read benchmark (root)");
  app.add_option("--file_mb", o.file_mb, "size of the big file in MiB");
  app.add_option("--small_files", o.small_files, "number of 4 KiB files");
  app.add_option("--passes", o.passes, "passes per measurement (best is kept)");
  app.add_option("--work_dir", o.work_dir, "where the temp tree, blob and cache go");
  CLI11_PARSE(app, argc, argv);
  return lazypull::Run(o);
}
