// cache_read_bench: throughput of ChunkCache hit reads vs plain pread of the same files.
//
// Stores --chunks chunks of --chunk_size bytes, then reads them in --block sized pieces
// (sequentially through each chunk, chunks in a shuffled order) for --seconds, first with
// pread on fds opened once up front (the baseline: the best a cache hit could do), then with
// ChunkCache::Read. Both run in the same process on the same, page-cached files. Prints one
// JSON line per (block, threads) with both throughputs and cache/pread as "ratio".
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fetcher/cache/chunk_cache.h"
#include "nlohmann/json.hpp"

namespace lazypull {
namespace {

struct Options {
  size_t chunks = 64;
  size_t chunk_size = 1 << 20;
  std::vector<size_t> blocks = {4096, 131072};
  std::vector<int> threads = {1, 2};
  double seconds = 1.0;
};

// Runs `read_block(chunk, offset, buf, len)` from `threads` threads for `seconds`; returns
// bytes per second.
double Measure(const Options& o, size_t block, int threads,
               const std::function<bool(size_t, uint64_t, char*, size_t)>& read_block) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<size_t> order(o.chunks);
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), std::mt19937(t + 1));
      std::vector<char> buf(block);
      uint64_t bytes = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (size_t c : order) {
          for (uint64_t off = 0; off < o.chunk_size; off += block) {
            size_t len = std::min<uint64_t>(block, o.chunk_size - off);
            if (!read_block(c, off, buf.data(), len)) {
              failed = true;
              stop = true;
              return;
            }
            bytes += len;
          }
          if (stop.load(std::memory_order_relaxed)) break;
        }
      }
      total += bytes;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  stop = true;
  for (auto& w : workers) w.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (failed) {
    std::fprintf(stderr, "cache_read_bench: a read failed\n");
    std::exit(1);
  }
  return static_cast<double>(total.load()) / elapsed;
}

int Run(const Options& o) {
  char tmpl[] = "/tmp/lazypull-cache-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return 1;
  std::string dir = tmpl;
  int rc = 0;
  {
    CacheConfig config;
    config.dir = dir;
    config.max_bytes = uint64_t{o.chunks} * o.chunk_size * 2;
    auto cache = ChunkCache::Open(config);
    if (!cache.ok()) {
      std::fprintf(stderr, "open: %s\n", cache.status().ToString().c_str());
      return 1;
    }
    std::vector<Digest> digests;
    std::vector<UniqueFd> fds;
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < o.chunks; ++i) {
      std::string data(o.chunk_size, '\0');
      for (auto& c : data) c = static_cast<char>(rng());
      digests.push_back(Digest::Of(data));
      if (absl::Status s = (*cache)->Put(digests.back(), data); !s.ok()) {
        std::fprintf(stderr, "put: %s\n", s.ToString().c_str());
        return 1;
      }
      fds.emplace_back(::open((*cache)->ChunkPath(digests.back()).c_str(), O_RDONLY | O_CLOEXEC));
    }
    // Warm both paths (page cache, fd cache) before measuring.
    std::vector<char> warm(o.chunk_size);
    for (size_t i = 0; i < o.chunks; ++i) {
      if (!(*cache)->Read(digests[i], 0, warm.data(), warm.size()).ok()) return 1;
    }
    for (size_t block : o.blocks) {
      for (int threads : o.threads) {
        double pread_bps =
            Measure(o, block, threads, [&](size_t c, uint64_t off, char* buf, size_t len) {
              return ::pread(fds[c].get(), buf, len, static_cast<off_t>(off)) ==
                     static_cast<ssize_t>(len);
            });
        double cache_bps =
            Measure(o, block, threads, [&](size_t c, uint64_t off, char* buf, size_t len) {
              auto n = (*cache)->Read(digests[c], off, buf, len);
              return n.ok() && *n == len;
            });
        nlohmann::json line = {{"bench", "chunk_cache_hit_read"},
                               {"block_bytes", block},
                               {"threads", threads},
                               {"chunk_bytes", o.chunk_size},
                               {"chunks", o.chunks},
                               {"pread_mib_s", pread_bps / (1 << 20)},
                               {"cache_mib_s", cache_bps / (1 << 20)},
                               {"ratio", cache_bps / pread_bps}};
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      }
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) {
  lazypull::Options o;
  CLI::App app{"ChunkCache hit-path read throughput vs plain pread"};
  app.add_option("--chunks", o.chunks, "number of chunks");
  app.add_option("--chunk_size", o.chunk_size, "bytes per chunk");
  app.add_option("--block", o.blocks, "read sizes in bytes");
  app.add_option("--threads", o.threads, "reader thread counts");
  app.add_option("--seconds", o.seconds, "measuring time per case and path");
  CLI11_PARSE(app, argc, argv);
  lazypull::SetLogLevel(lazypull::LogLevel::kWarn);
  return lazypull::Run(o);
}
