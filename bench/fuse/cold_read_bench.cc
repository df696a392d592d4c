// fuse_cold_bench: cold and warm reads through a fresh lazypull FUSE layer mount vs the same
// files on an overlayfs mount of the fully unpacked tree, plus daemon-side RSS with 20 layers
// mounted, all measured in one run (run as root; not a ctest test).
//
// Builds a source tree (one --file_mb MiB random file plus --small_files random files of
// 4-16 KiB in 10 dirs), converts it to eStargz with lazypull's writer, then per measurement:
//   cold_big_file / cold_small_files: a FRESH FUSE mount (new empty ChunkCache, no background
//       fetch) after `echo 3 > /proc/sys/vm/drop_caches`, vs an overlayfs mount
//       (lowerdir=<unpacked>:<empty>) after the same drop. The blob is pushed to a real
//       docker-registry on 127.0.0.1 and read with RegistryClient::OpenBlob (Range requests
//       over loopback). The *_localblob variants read it from a local file BlobReader instead:
//       the data path alone (cold blob read, gunzip, sha256 verification, chunk-cache writes).
//   warm_seq_read: re-reads of the big file on both sides, page cache warm (best of 3).
//   rss_20_layers: VmRSS of this process before/after mounting 20 distinct small eStargz layers
//       (--rss_layer_files files each) sharing one ChunkCache, and after walking them all.
// Prints one JSON line per measurement. Cold ratios are lazypull time / native time (lower is
// better); the warm ratio is FUSE throughput / native throughput (target >= 0.7).
#include <fcntl.h>
#include <malloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
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
#include "fetcher/registry/http_transport.h"
#include "fetcher/registry/reference.h"
#include "fetcher/registry/registry_client.h"
#include "fetcher/tar/tar_scanner.h"
#include "mount/backend.h"
#include "nlohmann/json.hpp"
#include "tests/harness/registry_process.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  size_t file_mb = 100;
  size_t small_files = 1000;
  int passes = 2;
  size_t rss_layers = 20;
  size_t rss_layer_files = 1000;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fuse_cold_bench: %s\n", what.c_str());
  std::exit(1);
}

std::string RandomBytes(size_t n, std::mt19937_64& rng) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

void WriteBytes(const std::string& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size()) Die("write " + path);
  std::fclose(f);
}

// Writes `count` random files of [min_size, max_size] bytes into 10 dirs under `root`;
// returns their paths relative to `root`.
std::vector<std::string> WriteSmallFiles(const std::string& root, size_t count, size_t min_size,
                                         size_t max_size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> size(min_size, max_size);
  std::vector<std::string> rel;
  for (size_t i = 0; i < count; ++i) {
    std::string dir = "d" + std::to_string(i % 10);
    fs::create_directories(root + "/" + dir);
    rel.push_back(dir + "/f" + std::to_string(i));
    WriteBytes(root + "/" + rel.back(), RandomBytes(size(rng), rng));
  }
  std::sort(rel.begin(), rel.end());
  return rel;
}

// tar (pax, sorted) of `src` -> eStargz at `out` with lazypull's writer.
convert::EstargzResult BuildEstargz(const std::string& src, const std::string& out) {
  const std::string tar_path = out + ".tar";
  std::string cmd = "tar --format=pax --sort=name -C " + src + " -cf " + tar_path + " .";
  if (std::system(cmd.c_str()) != 0) Die("tar " + src);
  auto tar = NewFileBlobReader(tar_path);
  if (!tar.ok()) Die(tar.status().ToString());
  auto tar_index = tar::ScanTar(**tar);
  if (!tar_index.ok()) Die(tar_index.status().ToString());
  auto sink = convert::NewFileBlobSink(out);
  if (!sink.ok()) Die(sink.status().ToString());
  auto written = convert::WriteEstargz(**tar, *tar_index, {}, **sink);
  if (!written.ok()) Die(written.status().ToString());
  fs::remove(tar_path);
  return *written;
}

void DropCaches() {
  sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3" << std::flush;
  if (!f) Die("cannot write /proc/sys/vm/drop_caches (run as root)");
}

// One FUSE-mounted eStargz layer and everything it owns (members destroyed bottom-up, so the
// mount goes first).
struct FuseLayer {
  std::unique_ptr<ChunkCache> owned_cache;
  std::shared_ptr<LayerReader> reader;
  std::unique_ptr<mount::MountedLayer> mount;
};

// Mounts the eStargz blob `blob` on `target` (created). Uses `cache` if non-null, otherwise
// opens a fresh one at `cache_dir`. No background fetch is started.
std::unique_ptr<FuseLayer> MountLayer(mount::LayerMountBackend& backend,
                                      const std::string& layer_id,
                                      std::shared_ptr<BlobReader> shared_blob,
                                      const Digest& toc_digest, ChunkCache* cache,
                                      const std::string& cache_dir, const std::string& target) {
  auto layer = std::make_unique<FuseLayer>();
  if (cache == nullptr) {
    CacheConfig cc;
    cc.dir = cache_dir;
    auto opened = ChunkCache::Open(cc);
    if (!opened.ok()) Die(opened.status().ToString());
    layer->owned_cache = std::move(*opened);
    cache = layer->owned_cache.get();
  }
  auto index = format::ReadEstargzIndex(*shared_blob, toc_digest);
  if (!index.ok()) Die(index.status().ToString());
  mount::MountConfig config;
  auto reader =
      LayerReader::Create(layer_id, std::make_shared<format::LayerIndex>(std::move(*index)),
                          shared_blob, cache, config.reader);
  if (!reader.ok()) Die(reader.status().ToString());
  layer->reader = std::move(*reader);
  fs::create_directories(target);
  auto mounted = backend.Mount({layer_id, layer->reader, target});
  if (!mounted.ok()) Die(mounted.status().ToString());
  layer->mount = std::move(*mounted);
  return layer;
}

// Read-only overlayfs of `lower` (the unpacked tree) over an empty second lowerdir; unmounted
// on destruction.
class OverlayMount {
 public:
  OverlayMount(const std::string& lower, const std::string& empty, const std::string& target)
      : target_(target) {
    fs::create_directories(empty);
    fs::create_directories(target);
    std::string opts = "lowerdir=" + lower + ":" + empty;
    if (::mount("overlay", target.c_str(), "overlay", MS_RDONLY, opts.c_str()) != 0) {
      Die("mount overlay " + opts + " on " + target + ": " + strerror(errno));
    }
  }
  ~OverlayMount() { umount2(target_.c_str(), MNT_DETACH); }
  OverlayMount(const OverlayMount&) = delete;
  OverlayMount& operator=(const OverlayMount&) = delete;

 private:
  std::string target_;
};

// Reads `path` to the end in 1 MiB blocks; returns the byte count.
uint64_t ReadWhole(const std::string& path, std::vector<char>& buf) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die("open " + path + ": " + strerror(errno));
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) Die("read " + path + ": " + strerror(errno));
    if (n == 0) break;
    total += n;
  }
  close(fd);
  return total;
}

double TimeReads(const std::string& root, const std::vector<std::string>& rel) {
  std::vector<char> buf(1 << 20);
  auto start = Clock::now();
  for (const auto& r : rel) ReadWhole(root + "/" + r, buf);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double VmRssMb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  Die("no VmRSS in /proc/self/status");
}

std::shared_ptr<BlobReader> OpenFileBlob(const std::string& path) {
  auto blob = NewFileBlobReader(path);
  if (!blob.ok()) Die(blob.status().ToString());
  return std::move(*blob);
}

void Print(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

int Run(const Options& o) {
  SetLogLevel(LogLevel::kWarn);
  testing::TempDir tmp("lazypull-fuse-cold-bench");
  const std::string src = tmp.Sub("src"), blob = tmp.Sub("layer.estargz");
  auto backend = mount::NewLayerMountBackend(mount::MountConfig{});
  if (!backend.ok()) Die(backend.status().ToString());

  std::vector<std::string> small_files;
  {
    std::mt19937_64 rng(7);
    fs::create_directories(src);
    WriteBytes(src + "/big.bin", RandomBytes(o.file_mb << 20, rng));
    small_files = WriteSmallFiles(src, o.small_files, 4 << 10, 16 << 10, 8);
  }
  const convert::EstargzResult built = BuildEstargz(src, blob);
  const Digest toc = built.toc_digest;
  uint64_t small_bytes = 0;
  for (const auto& r : small_files) small_bytes += fs::file_size(src + "/" + r);
  const double big_bytes = static_cast<double>(o.file_mb << 20);
  Print({{"bench", "setup"},
         {"blob_bytes", fs::file_size(blob)},
         {"big_file_bytes", big_bytes},
         {"small_files", small_files.size()},
         {"small_files_bytes", small_bytes},
         {"blob_source",
          "cold_*: docker-registry on 127.0.0.1 via RegistryClient::OpenBlob (loopback HTTP, "
          "registry storage page-cache cold too); cold_*_localblob: local file BlobReader"},
         {"native", "overlayfs lowerdir=<unpacked on local disk>:<empty>, read-only"}});

  // The blob in a real docker-registry on 127.0.0.1, read back with Range requests.
  auto registry_process = testing::RegistryProcess::Start(tmp.Sub("registry"));
  if (!registry_process.ok()) Die(registry_process.status().ToString());
  registry::RegistryConfig rc;
  registry::RegistryClient client(rc, registry::NewCurlTransport());
  auto ref = registry::ParseReference((*registry_process)->host() + "/bench/layer:v1");
  if (!ref.ok()) Die(ref.status().ToString());
  oci::Descriptor desc;
  desc.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  desc.digest = built.blob_digest;
  desc.size = static_cast<int64_t>(built.blob_size);
  {
    auto content = OpenFileBlob(blob);
    if (auto st = client.PushBlob(*ref, desc, *content); !st.ok()) Die(st.ToString());
  }
  auto open_blob = [&](bool from_registry) -> std::shared_ptr<BlobReader> {
    if (from_registry) return client.OpenBlob(*ref, desc);
    return OpenFileBlob(blob);
  };

  OverlayMount overlay(src, tmp.Sub("empty"), tmp.Sub("ovl"));
  const std::string native_root = tmp.Sub("ovl");
  int mount_seq = 0;
  // Cold: best of `passes`, each on a fresh FUSE mount with an empty cache.
  auto cold = [&](const std::string& name, const std::vector<std::string>& files, double bytes,
                  bool from_registry) {
    double best_fuse = 1e30, best_native = 1e30, warm_fuse = 1e30, warm_native = 1e30;
    for (int pass = 0; pass < o.passes; ++pass) {
      const std::string id = "cold" + std::to_string(mount_seq++);
      auto layer = MountLayer(**backend, id, open_blob(from_registry), toc, nullptr,
                              tmp.Sub(id + "-cache"), tmp.Sub(id + "-mnt"));
      const std::string fuse_root = tmp.Sub(id + "-mnt");
      DropCaches();
      best_native = std::min(best_native, TimeReads(native_root, files));
      DropCaches();
      best_fuse = std::min(best_fuse, TimeReads(fuse_root, files));
      // The second drop evicted the native files: read them once more before timing so both
      // warm numbers are a second read.
      TimeReads(native_root, files);
      for (int rep = 0; rep < 3; ++rep) {  // warm reads are short: best of 3 against noise
        warm_native = std::min(warm_native, TimeReads(native_root, files));
        warm_fuse = std::min(warm_fuse, TimeReads(fuse_root, files));
      }
      if (pass == o.passes - 1) {
        nlohmann::json status = layer->mount->Status().ToJson();
        status["bench"] = name + "_fuse_status";
        Print(status);
      }
    }
    Print({{"bench", name},
           {"lazypull_seconds", best_fuse},
           {"native_seconds", best_native},
           {"lazypull_MBps", bytes / best_fuse / 1e6},
           {"native_MBps", bytes / best_native / 1e6},
           {"ratio_lazypull_time_over_native", best_fuse / best_native}});
    return std::make_pair(warm_fuse, warm_native);
  };
  cold("cold_big_file_localblob", {"big.bin"}, big_bytes, false);
  auto [warm_fuse, warm_native] = cold("cold_big_file", {"big.bin"}, big_bytes, true);
  Print({{"bench", "warm_seq_read"},
         {"what", "re-read of the big file, page cache warm on both sides, best of 3"},
         {"lazypull_seconds", warm_fuse},
         {"native_seconds", warm_native},
         {"lazypull_MBps", big_bytes / warm_fuse / 1e6},
         {"native_MBps", big_bytes / warm_native / 1e6},
         {"ratio_throughput_lazypull_over_native", warm_native / warm_fuse},
         {"target", ">= 0.7"}});
  cold("cold_small_files_localblob", small_files, static_cast<double>(small_bytes), false);
  auto [small_warm_fuse, small_warm_native] =
      cold("cold_small_files", small_files, static_cast<double>(small_bytes), true);
  Print({{"bench", "warm_small_files"},
         {"lazypull_seconds", small_warm_fuse},
         {"native_seconds", small_warm_native},
         {"ratio_throughput_lazypull_over_native", small_warm_native / small_warm_fuse}});

  // RSS with N distinct layers mounted, sharing one chunk cache as in the daemon.
  std::vector<std::pair<std::string, Digest>> layer_blobs;
  for (size_t i = 0; i < o.rss_layers; ++i) {
    const std::string dir = tmp.Sub("rss-src" + std::to_string(i));
    WriteSmallFiles(dir, o.rss_layer_files, 512, 2048, 100 + i);
    const std::string path = tmp.Sub("rss" + std::to_string(i) + ".estargz");
    layer_blobs.emplace_back(path, BuildEstargz(dir, path).toc_digest);
    fs::remove_all(dir);
  }
  CacheConfig cc;
  cc.dir = tmp.Sub("rss-cache");
  auto shared_cache = ChunkCache::Open(cc);
  if (!shared_cache.ok()) Die(shared_cache.status().ToString());
  malloc_trim(0);
  const double rss_before = VmRssMb();
  std::vector<std::unique_ptr<FuseLayer>> layers;
  for (size_t i = 0; i < layer_blobs.size(); ++i) {
    const std::string id = "rss" + std::to_string(i);
    layers.push_back(MountLayer(**backend, id, OpenFileBlob(layer_blobs[i].first),
                                layer_blobs[i].second, shared_cache->get(), "",
                                tmp.Sub(id + "-mnt")));
  }
  const double rss_mounted = VmRssMb();
  size_t entries = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    for (const auto& e :
         fs::recursive_directory_iterator(tmp.Sub("rss" + std::to_string(i) + "-mnt"))) {
      struct stat st;
      if (lstat(e.path().c_str(), &st) != 0) Die("lstat " + e.path().string());
      ++entries;
    }
  }
  const double rss_walked = VmRssMb();
  Print({{"bench", "rss_20_layers"},
         {"layers", layers.size()},
         {"files_per_layer", o.rss_layer_files},
         {"entries_walked", entries},
         {"rss_before_MB", rss_before},
         {"rss_mounted_MB", rss_mounted},
         {"rss_after_walk_MB", rss_walked},
         {"delta_mounted_MB", rss_mounted - rss_before},
         {"delta_after_walk_MB", rss_walked - rss_before},
         {"delta_per_layer_MB", (rss_walked - rss_before) / layers.size()}});
  layers.clear();  // unmount before the cache and the temp dir go
  return 0;
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) {
  lazypull::Options o;
  CLI::App app("lazypull FUSE cold/warm read and RSS benchmark (root)");
  app.add_option("--file_mb", o.file_mb, "size of the big file in MiB");
  app.add_option("--small_files", o.small_files, "number of 4-16 KiB files");
  app.add_option("--passes", o.passes, "cold passes per measurement (best is kept)");
  app.add_option("--rss_layers", o.rss_layers, "layers mounted for the RSS measurement");
  app.add_option("--rss_layer_files", o.rss_layer_files, "files per RSS layer");
  CLI11_PARSE(app, argc, argv);
  return lazypull::Run(o);
}
