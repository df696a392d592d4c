// registry_bench: RegistryClient throughput and latency against a real docker-registry on
// 127.0.0.1, with `curl` downloading the same blob in the same run as the baseline.
//
// 1. Pushes a --size_mib blob (random bytes) with RegistryClient::PushBlob (chunked upload).
// 2. Baseline: `curl -o /dev/null` of the whole blob (best of --repeat).
// 3. RegistryClient range streams: the blob split into 1 and 8 contiguous sections, each read
//    by its own thread with consecutive --range_mib Range requests (best of --repeat); prints
//    MiB/s and the ratio to curl (target >= 0.9).
// 4. --random_reads random 64 KiB range reads: p50/p99 latency.
// One JSON line per measurement on stdout.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "base/logging.h"
#include "fetcher/oci/media_types.h"
#include "fetcher/registry/registry_client.h"
#include "nlohmann/json.hpp"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"

namespace lazypull {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int Main(int argc, char** argv) {
  CLI::App app{"registry_bench"};
  uint64_t size_mib = 512;
  uint64_t range_mib = 16;
  int repeat = 2;
  int random_reads = 1000;
  app.add_option("--size_mib", size_mib, "blob size");
  app.add_option("--range_mib", range_mib, "bytes per range request in the stream tests");
  app.add_option("--repeat", repeat, "runs per measurement (best is reported)");
  app.add_option("--random_reads", random_reads, "random 64 KiB reads");
  CLI11_PARSE(app, argc, argv);
  SetLogLevel(LogLevel::kWarn);

  testing::TempDir dir("lazypull-registry-bench");
  auto reg = testing::RegistryProcess::Start(dir.Sub("reg"));
  if (!reg.ok()) {
    std::fprintf(stderr, "registry: %s\n", std::string(reg.status().message()).c_str());
    return 1;
  }
  const uint64_t size = size_mib << 20;
  // Random-ish content generated in place (cheap) and written to a file to push from.
  {
    std::string block(1 << 20, '\0');
    std::mt19937_64 rng(42);
    FILE* f = std::fopen(dir.Sub("blob").c_str(), "wb");
    for (uint64_t i = 0; i < size_mib; ++i) {
      for (size_t k = 0; k + 8 <= block.size(); k += 8) {
        uint64_t v = rng();
        std::memcpy(block.data() + k, &v, 8);
      }
      std::fwrite(block.data(), 1, block.size(), f);
    }
    std::fclose(f);
  }
  auto file = NewFileBlobReader(dir.Sub("blob"));
  Sha256 hash;
  for (uint64_t off = 0; off < size; off += 16 << 20) {
    hash.Update(*(*file)->ReadAt(off, std::min<uint64_t>(16 << 20, size - off)));
  }
  oci::Descriptor desc;
  desc.media_type = std::string(oci::kOciLayerGzip);
  desc.digest = hash.Finish();
  desc.size = static_cast<int64_t>(size);

  registry::RegistryConfig config;
  config.config_path = "";
  config.max_concurrency_per_host = 16;
  registry::RegistryClient client(config, registry::NewCurlTransport());
  auto ref = *registry::ParseReference((*reg)->host() + "/bench/blob:latest");
  auto t0 = Clock::now();
  if (auto st = client.PushBlob(ref, desc, **file); !st.ok()) {
    std::fprintf(stderr, "push: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  double push_s = Seconds(Clock::now() - t0);
  std::printf("%s\n",
              nlohmann::json(
                  {{"bench", "registry_push"}, {"mib", size_mib}, {"mib_per_s", size_mib / push_s}})
                  .dump()
                  .c_str());

  std::string url = "http://" + (*reg)->host() + "/v2/bench/blob/blobs/" + desc.digest.ToString();
  double curl_best = 1e9;
  for (int i = 0; i < repeat; ++i) {
    auto start = Clock::now();
    auto r = testing::RunCommand({"curl", "-sf", "-o", "/dev/null", url});
    double s = Seconds(Clock::now() - start);
    if (!r.ok() || r->exit_code != 0) {
      std::fprintf(stderr, "curl failed\n");
      return 1;
    }
    curl_best = std::min(curl_best, s);
  }
  double curl_mibs = size_mib / curl_best;
  std::printf(
      "%s\n",
      nlohmann::json({{"bench", "curl_full_download"}, {"mib", size_mib}, {"mib_per_s", curl_mibs}})
          .dump()
          .c_str());

  for (int streams : {1, 8}) {
    double best = 1e9;
    for (int i = 0; i < repeat; ++i) {
      std::atomic<int> errors{0};
      auto start = Clock::now();
      std::vector<std::thread> threads;
      uint64_t section = (size + streams - 1) / streams;
      for (int t = 0; t < streams; ++t) {
        threads.emplace_back([&, t] {
          uint64_t begin = t * section, end = std::min(size, begin + section);
          for (uint64_t off = begin; off < end; off += range_mib << 20) {
            uint64_t n = std::min<uint64_t>(range_mib << 20, end - off);
            auto d = client.ReadRange(ref, desc, off, n);
            if (!d.ok() || d->size() != n) errors++;
          }
        });
      }
      for (auto& t : threads) t.join();
      if (errors) {
        std::fprintf(stderr, "range reads failed\n");
        return 1;
      }
      best = std::min(best, Seconds(Clock::now() - start));
    }
    double mibs = size_mib / best;
    std::printf("%s\n", nlohmann::json({{"bench", "lazypull_range_streams"},
                                        {"streams", streams},
                                        {"range_mib", range_mib},
                                        {"mib_per_s", mibs},
                                        {"curl_mib_per_s", curl_mibs},
                                        {"ratio", mibs / curl_mibs}})
                            .dump()
                            .c_str());
  }

  std::mt19937_64 rng(7);
  std::vector<double> lat_ms;
  const uint64_t kRead = 64 * 1024;
  for (int i = 0; i < random_reads; ++i) {
    uint64_t off = rng() % (size - kRead);
    auto start = Clock::now();
    auto d = client.ReadRange(ref, desc, off, kRead);
    lat_ms.push_back(Seconds(Clock::now() - start) * 1000);
    if (!d.ok()) {
      std::fprintf(stderr, "random read failed: %s\n", std::string(d.status().message()).c_str());
      return 1;
    }
  }
  std::sort(lat_ms.begin(), lat_ms.end());
  auto pct = [&](double p) { return lat_ms[static_cast<size_t>(p * (lat_ms.size() - 1))]; };
  std::printf("%s\n", nlohmann::json({{"bench", "lazypull_random_64k_reads"},
                                      {"reads", random_reads},
                                      {"p50_ms", pct(0.5)},
                                      {"p99_ms", pct(0.99)}})
                          .dump()
                          .c_str());
  return 0;
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) { return lazypull::Main(argc, argv); }
