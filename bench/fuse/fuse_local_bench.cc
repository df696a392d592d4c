// fuse_local_bench: the FUSE backend serving a FULLY LOCAL layer (every chunk fetched and
// verified in the chunk cache) against the same tree on local disk, each under a read-only
// overlayfs as a container sees it, as ratios measured in one run (root; not a ctest test).
// Issue 22's FUSE targets: read of a 32 MiB file <= 1.3x native and stat walk of the whole tree
// <= 1.3x native, the page cache dropped before each measured pass.
//
// With passthrough (the default where the kernel has it), the first open of each file
// after the layer is local registers its backing file; big.bin's first open (the cmp below,
// untimed) is answered without passthrough and queues the assembly of its backing file from
// its chunks, which the bench waits for before timing.
//
// The layer: python3.11 with its libraries and standard library (the Debian python image's
// bulk, ~1,400 entries) plus a --file_mb MiB random file, converted to eStargz by lazypull's
// writer; the FUSE mount reads the blob from a local file and its background fetch makes the
// layer fully local before anything is measured (no fetch is timed).
//
// Every pass drops the page cache, dentries and inodes (`echo 3 > drop_caches`, which also
// drops the chunk-cache files' pages: the FUSE side reads them from disk as native reads its
// file) and then measures one mode; passes alternate native/fuse. Rows:
//   seq_read   one sequential read (1 MiB read(2) calls) of the big file
//   read_tree  open + read + close of every file of the python tree (~1,500), as a start does
//   stat_walk  nftw + lstat of every entry
//   *_warm     the same, page cache warm (best of --passes; for information)
// Each row reports median and best seconds per mode and `ratio` = fuse median / native median
// (lower is better). The last line is the mount's status JSON and the FUSE op counts of the
// measured passes.
#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "base/logging.h"
#include "bench/common/bench_support.h"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "fetcher/tar/tar_scanner.h"
#include "mount/backend.h"
#include "nlohmann/json.hpp"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using bench::BuildEstargz;
using bench::Die;
using bench::DropCaches;
using bench::Overlay;
using bench::Print;
using bench::Sh;
using Clock = std::chrono::steady_clock;

struct Options {
  size_t file_mb = 32;
  int passes = 7;
  bool overlay = true;
  // FUSE knobs (defaults = the daemon's), for measuring one change against another.
  bool zero_copy = mount::FuseOptions().zero_copy;
  unsigned max_read_kb = mount::FuseOptions().max_read >> 10;
  unsigned readahead_kb = mount::FuseOptions().readahead >> 10;
  bool passthrough = mount::FuseOptions().passthrough;
  std::string only;  // run only this measurement (e.g. to profile it)
};

// The layer's tree: python3.11 + libraries (merged-/usr layout, as erofs_bench), big.bin.
void BuildTree(const std::string& root, const Options& o) {
  Sh("set -e; R=" + root +
     "; mkdir -p $R/usr/bin $R/usr/lib/x86_64-linux-gnu $R/usr/lib64 $R/dev $R/proc; "
     "ln -s usr/lib $R/lib; ln -s usr/lib64 $R/lib64; cp -a /usr/bin/python3.11 $R/usr/bin/; "
     "cp -a /usr/lib/python3.11 $R/usr/lib/; "
     "for f in /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so; do ldd $f; done | "
     "awk '/=>/ {print $3} /ld-linux/ {print $1}' | sort -u | while read l; do "
     "case $l in */ld-linux*) cp -L $l $R/usr/lib64/;; /*) cp -L $l "
     "$R/usr/lib/x86_64-linux-gnu/;; esac; done");
  std::mt19937_64 rng(7);
  std::string big(o.file_mb << 20, '\0');
  for (size_t i = 0; i + 8 <= big.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&big[i], &v, 8);
  }
  std::ofstream(root + "/big.bin", std::ios::binary).write(big.data(), big.size());
}

// Counts the FUSE requests the layer file system answers (the daemon's metrics hook).
class OpCounter : public mount::FsOpObserver {
 public:
  void OnOp(std::string_view, std::string_view op, std::chrono::nanoseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[std::string(op)];
  }
  std::map<std::string, uint64_t> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(counts_, {});
  }

 private:
  std::mutex mu_;
  std::map<std::string, uint64_t> counts_;
};

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double TimeRead(const std::string& path, uint64_t expect) {
  std::vector<char> buf(1 << 20);
  auto start = Clock::now();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die("open " + path + ": " + strerror(errno));
  uint64_t total = 0;
  for (ssize_t n; (n = read(fd, buf.data(), buf.size())) != 0; total += n) {
    if (n < 0) Die("read " + path + ": " + strerror(errno));
  }
  close(fd);
  double s = Seconds(start);
  if (total != expect) Die("short read of " + path);
  return s;
}

// Reads every file of `rel` under `root` once (what a program's start does, in bulk).
double TimeReadTree(const std::string& root, const std::vector<std::string>& rel) {
  std::vector<char> buf(1 << 20);
  auto start = Clock::now();
  for (const std::string& r : rel) {
    const std::string path = root + "/" + r;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) Die("open " + path + ": " + strerror(errno));
    for (ssize_t n; (n = read(fd, buf.data(), buf.size())) != 0;) {
      if (n < 0) Die("read " + path + ": " + strerror(errno));
    }
    close(fd);
  }
  return Seconds(start);
}

size_t walked = 0;
int CountEntry(const char*, const struct stat*, int, struct FTW*) {
  ++walked;
  return 0;
}
double TimeWalk(const std::string& root, size_t expect) {
  walked = 0;
  auto start = Clock::now();
  if (nftw(root.c_str(), CountEntry, 64, FTW_PHYS) != 0) Die("nftw " + root);
  double s = Seconds(start);
  if (walked != expect) Die("walk of " + root + " saw " + std::to_string(walked) + " entries");
  return s;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// CPU seconds (user + system) of every thread of this process, the FUSE workers included.
double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// `passes` samples per mode, alternating which mode goes first; `cold` drops the caches
// before every sample. Besides wall time, the process's CPU time per sample: on a machine
// shared with other jobs it varies less than wall time (the FUSE side waits for its worker
// threads to be scheduled), and it counts the work the FUSE path adds.
void Measure(const Options& o, const std::string& name, bool cold,
             const std::function<double()>& native, const std::function<double()>& fuse) {
  if (!o.only.empty() && o.only != name) return;
  const int passes = o.passes;
  std::vector<double> n, f, n_cpu, f_cpu;
  for (int i = 0; i < passes; ++i) {
    for (int side = 0; side < 2; ++side) {
      bool native_now = (side == 0) == (i % 2 == 0);
      if (cold) DropCaches();
      const double cpu = CpuSeconds();
      (native_now ? n : f).push_back(native_now ? native() : fuse());
      (native_now ? n_cpu : f_cpu).push_back(CpuSeconds() - cpu);
    }
  }
  Print({{"bench", name},
         {"native_median_s", Median(n)},
         {"fuse_median_s", Median(f)},
         {"native_best_s", *std::min_element(n.begin(), n.end())},
         {"fuse_best_s", *std::min_element(f.begin(), f.end())},
         {"native_cpu_median_s", Median(n_cpu)},
         {"fuse_cpu_median_s", Median(f_cpu)},
         {"ratio", Median(f) / Median(n)},
         {"ratio_best",
          *std::min_element(f.begin(), f.end()) / *std::min_element(n.begin(), n.end())},
         {"ratio_cpu", Median(f_cpu) / Median(n_cpu)}});
}

int Run(const Options& o) {
  SetLogLevel(LogLevel::kWarn);
  testing::TempDir tmp("lazypull-fuse-local-bench");
  const std::string src = tmp.Sub("src"), blob_path = tmp.Sub("layer.estargz");
  BuildTree(src, o);
  const convert::EstargzResult built = BuildEstargz(src, blob_path);
  size_t entries = 1;                   // the root
  std::vector<std::string> tree_files;  // the python tree's regular files (not big.bin)
  uint64_t tree_bytes = 0;
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator();
       ++it) {
    ++entries;
    if (it->is_regular_file() && !it->is_symlink() && it->path().filename() != "big.bin") {
      tree_files.push_back(fs::relative(it->path(), src).string());
      tree_bytes += it->file_size();
    }
  }
  auto counter = std::make_shared<OpCounter>();
  mount::MountConfig config;
  config.backend = mount::BackendKind::kFuse;
  config.fuse.zero_copy = o.zero_copy;
  config.fuse.max_read = o.max_read_kb << 10;
  config.fuse.readahead = o.readahead_kb << 10;
  config.fuse.op_observer = counter;
  config.fuse.passthrough = o.passthrough;
  config.fuse.passthrough_dir = tmp.Sub("passthrough");  // as the daemon: under its root
  Print({{"bench", "setup"},
         {"entries", entries},
         {"big_file_bytes", o.file_mb << 20},
         {"tree_files", tree_files.size()},
         {"tree_bytes", tree_bytes},
         {"blob_bytes", fs::file_size(blob_path)},
         {"overlay", o.overlay},
         {"zero_copy", o.zero_copy},
         {"max_read", config.fuse.max_read},
         {"readahead", config.fuse.readahead},
         {"passthrough", o.passthrough}});

  auto blob = NewFileBlobReader(blob_path);
  if (!blob.ok()) Die(blob.status().ToString());
  std::shared_ptr<BlobReader> shared_blob = std::move(*blob);
  auto index = format::ReadEstargzIndex(*shared_blob, built.toc_digest);
  if (!index.ok()) Die(index.status().ToString());
  CacheConfig cc;
  cc.dir = tmp.Sub("cache");
  auto cache = ChunkCache::Open(cc);
  if (!cache.ok()) Die(cache.status().ToString());
  auto reader =
      LayerReader::Create("sha256:0000000000000000000000000000000000000000000000000000000000000001",
                          std::make_shared<const format::LayerIndex>(std::move(*index)),
                          shared_blob, cache->get(), config.reader);
  if (!reader.ok()) Die(reader.status().ToString());
  std::shared_ptr<LayerReader> shared_reader = std::move(*reader);
  auto backend = mount::NewLayerMountBackend(config);
  if (!backend.ok()) Die(backend.status().ToString());
  const std::string mnt = tmp.Sub("mnt");
  fs::create_directories(mnt);
  auto layer = (*backend)->Mount({.layer_id = "bench",
                                  .reader = shared_reader,
                                  .target_dir = mnt,
                                  .backend = "",
                                  .origin = {}});
  if (!layer.ok()) Die(layer.status().ToString());
  (*layer)->StartBackground();
  if (!shared_reader->WaitBackground(std::chrono::minutes(10))) Die("background fetch timeout");
  if ((*layer)->Status().reader.local_chunks != (*layer)->Status().reader.total_chunks) {
    Die("the layer is not fully local: " + (*layer)->Status().ToJson().dump());
  }

  std::unique_ptr<Overlay> native_ovl, fuse_ovl;
  std::string native_root = src, fuse_root = mnt;
  if (o.overlay) {
    native_ovl = std::make_unique<Overlay>(src, tmp.Sub("native-ovl"));
    fuse_ovl = std::make_unique<Overlay>(mnt, tmp.Sub("fuse-ovl"));
    native_root = native_ovl->path();
    fuse_root = fuse_ovl->path();
  }
  const uint64_t big = o.file_mb << 20;
  // The same bytes on both sides, once, before timing (with passthrough, this first open
  // also assembles big.bin's backing file).
  Sh("cmp " + native_root + "/big.bin " + fuse_root + "/big.bin");
  if ((*layer)->Status().passthrough == "on") {
    for (int i = 0; i < 60000 && (*layer)->Status().passthrough_copies == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  counter->Take();

  Measure(
      o, "seq_read", true, [&] { return TimeRead(native_root + "/big.bin", big); },
      [&] { return TimeRead(fuse_root + "/big.bin", big); });
  Measure(
      o, "read_tree", true, [&] { return TimeReadTree(native_root, tree_files); },
      [&] { return TimeReadTree(fuse_root, tree_files); });
  Measure(
      o, "stat_walk", true, [&] { return TimeWalk(native_root, entries); },
      [&] { return TimeWalk(fuse_root, entries); });
  std::map<std::string, uint64_t> cold_ops = counter->Take();
  Measure(
      o, "seq_read_warm", false, [&] { return TimeRead(native_root + "/big.bin", big); },
      [&] { return TimeRead(fuse_root + "/big.bin", big); });
  Measure(
      o, "stat_walk_warm", false, [&] { return TimeWalk(native_root, entries); },
      [&] { return TimeWalk(fuse_root, entries); });
  nlohmann::json status = (*layer)->Status().ToJson();
  status["bench"] = "fuse_status";
  status["cold_pass_ops"] = cold_ops;
  status["warm_pass_ops"] = counter->Take();
  Print(status);
  fuse_ovl.reset();
  native_ovl.reset();
  layer->reset();
  return 0;
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) {
  lazypull::Options o;
  CLI::App app("lazypull FUSE backend on a fully local layer vs native (root)");
  app.add_option("--file_mb", o.file_mb, "size of the big file in MiB");
  app.add_option("--passes", o.passes, "samples per mode and measurement (median is reported)");
  app.add_option("--overlay", o.overlay, "measure through a read-only overlayfs (as containers)");
  app.add_option("--zero_copy", o.zero_copy, "FUSE: splice cached chunks into replies");
  app.add_option("--max_read_kb", o.max_read_kb, "FUSE: max_read in KiB");
  app.add_option("--readahead_kb", o.readahead_kb, "FUSE: bdi readahead in KiB");
  app.add_option("--passthrough", o.passthrough, "FUSE: passthrough of fully local files");
  app.add_option("--only", o.only, "run only this measurement (seq_read, stat_walk, ...)");
  CLI11_PARSE(app, argc, argv);
  return lazypull::Run(o);
}
