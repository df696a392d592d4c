// index_bench: LayerIndex parse time and resident memory for a large synthetic layer TOC
// (default 200,000 files), against a baseline measured in the same run: parsing the same
// JSON into an nlohmann::json DOM. Every measurement runs in a forked child so its RSS is its
// own. Exits 1 if the index of an eStargz TOC holds more than --max-index-mb resident.
//
//   index_bench [--files N] [--max-index-mb 64]
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull::format {
namespace {

long StatusKb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(strlen(key)));
  }
  return -1;
}

std::string Hex64(uint64_t a, uint64_t b) {
  return fmt::format("{:016x}{:016x}{:016x}{:016x}", a * 0x9e3779b97f4a7c15ull, b ^ 0xabcdefull,
                     a + b * 31, a ^ (b << 7));
}

// A TOC with `files` regular files (1% of them in 4 chunks) in ~files/20 directories, with
// realistic names and every field the reference writers emit.
std::string MakeToc(size_t files, bool zstd, uint64_t* data_end) {
  std::string out = "{\"version\":1,\"entries\":[";
  uint64_t offset = 512;
  bool first = true;
  auto add = [&](const std::string& e) {
    if (!first) out += ',';
    first = false;
    out += e;
  };
  const char* times = zstd ? "2023-11-14T22:13:20.123456789Z" : "2023-11-14T22:13:20Z";
  size_t per_dir = 20;
  for (size_t i = 0; i < files; ++i) {
    if (i % per_dir == 0) {
      add(fmt::format(
          R"({{"name":"usr/lib/python3.11/site-packages/pkg{:05}/sub{:03}/","type":"dir","modtime":"{}","mode":493}})",
          i / 400, (i / per_dir) % 20, times));
    }
    std::string name =
        fmt::format("usr/lib/python3.11/site-packages/pkg{:05}/sub{:03}/module_{}.py", i / 400,
                    (i / per_dir) % 20, i);
    bool big = i % 100 == 0;
    uint64_t size = big ? 4 * 65536 : 1000 + i % 5000;
    uint64_t clen = big ? 65536 : size / 3 + 30;
    std::string digest = "sha256:" + Hex64(i, 1);
    if (!zstd) {
      add(fmt::format(
          R"({{"name":"{}","type":"reg","size":{},"modtime":"{}","mode":420,"userName":"root","groupName":"root","offset":{},"digest":"{}",{}"chunkDigest":"sha256:{}"}})",
          name, size, times, offset, digest, big ? "\"chunkSize\":65536," : "", Hex64(i, 2)));
    } else if (!big) {
      add(fmt::format(
          R"({{"type":"reg","name":"{}","mode":420,"size":{},"modtime":"{}","accesstime":"{}","changetime":"{}","digest":"{}","offset":{},"endOffset":{}}})",
          name, size, times, times, times, digest, offset, offset + clen));
    }
    if (big) {
      for (int c = 0; c < 4; ++c) {
        uint64_t o = offset + c * clen;
        if (zstd) {
          std::string head =
              c == 0
                  ? fmt::format(
                        R"("type":"reg","name":"{}","mode":420,"size":{},"modtime":"{}","digest":"{}","endOffset":{},)",
                        name, size, times, digest, offset + 4 * clen)
                  : fmt::format(R"("type":"chunk","name":"{}","chunkOffset":{},)", name, c * 65536);
          add(fmt::format(R"({{{}"offset":{},"chunkSize":65536,"chunkDigest":"sha256:{}"}})", head,
                          o, Hex64(i, 10 + c)));
        } else if (c > 0) {
          add(fmt::format(
              R"({{"name":"{}","type":"chunk","offset":{},"chunkOffset":{},"chunkSize":65536,"chunkDigest":"sha256:{}"}})",
              name, o, c * 65536, Hex64(i, 10 + c)));
        }
      }
      offset += 4 * clen;
    } else {
      offset += clen;
    }
  }
  out += "]}";
  *data_end = offset + 1000;
  return out;
}

// A blob whose data area reads as zeros; only the TOC member and footer are real.
class SparseTailBlob : public BlobReader {
 public:
  SparseTailBlob(uint64_t tail_offset, std::string tail)
      : tail_offset_(tail_offset), tail_(std::move(tail)) {}
  uint64_t Size() const override { return tail_offset_ + tail_.size(); }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, uint64_t length) override {
    if (offset + length > Size()) return absl::OutOfRangeError("past end");
    std::string out(length, '\0');
    for (uint64_t i = 0; i < length; ++i) {
      if (offset + i >= tail_offset_) out[i] = tail_[offset + i - tail_offset_];
    }
    return out;
  }

 private:
  uint64_t tail_offset_;
  std::string tail_;
};

std::string EstargzTail(const std::string& json, uint64_t toc_offset) {
  char h[512] = {};
  std::memcpy(h, "stargz.index.json", 17);
  std::snprintf(h + 124, 12, "%011lo", static_cast<unsigned long>(json.size()));
  h[156] = '0';
  std::string tar = std::string(h, 512) + json +
                    std::string((512 - json.size() % 512) % 512, '\0') + std::string(1024, '\0');
  std::string footer = "\x1f\x8b\x08\x04" + std::string(4, '\0') +
                       std::string("\x00\xff\x1a\x00SG\x16\x00", 8) +
                       fmt::format("{:016x}STARGZ", toc_offset) +
                       std::string("\x01\x00\x00\xff\xff", 5) + std::string(8, '\0');
  return *codec::GzipCompress(tar) + footer;
}

struct Result {
  double ms = 0;
  double rss_mb = 0;   // resident growth while the result is held (input freed)
  double peak_mb = 0;  // peak growth during the operation
  double heap_mb = 0;  // LayerIndex::MemoryUsage
  size_t inodes = 0;
};

// Runs `fn` in a child; it returns heap bytes and inode count and must keep its result alive
// until `measure` is called.
Result InChild(const std::function<void(Result*)>& fn) {
  int fds[2];
  if (pipe(fds) != 0) abort();
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Result r;
    fn(&r);
    if (write(fds[1], &r, sizeof(r)) != sizeof(r)) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  Result r;
  if (read(fds[0], &r, sizeof(r)) != sizeof(r)) {
    std::fprintf(stderr, "child failed\n");
    exit(2);
  }
  close(fds[0]);
  int status;
  waitpid(pid, &status, 0);
  return r;
}

double Mb(long kb) { return kb / 1024.0; }

}  // namespace
}  // namespace lazypull::format

int main(int argc, char** argv) {
  using namespace lazypull::format;
  size_t files = 200000;
  double max_index_mb = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--files") files = std::stoul(argv[i + 1]);
    if (std::string(argv[i]) == "--max-index-mb") max_index_mb = std::stod(argv[i + 1]);
  }
  uint64_t data_end = 0;
  const std::string estargz_json = MakeToc(files, false, &data_end);
  uint64_t zstd_end = 0;
  const std::string zstd_json = MakeToc(files, true, &zstd_end);
  std::printf("TOC: %zu files, eStargz JSON %.1f MB, zstd:chunked JSON %.1f MB\n", files,
              estargz_json.size() / 1048576.0, zstd_json.size() / 1048576.0);
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };

  // Each child copies the JSON it needs, so the measured growth excludes the parent's input.
  auto run = [&](const std::string& json, auto&& work) {
    return InChild([&](Result* r) {
      std::string input = json;
      malloc_trim(0);
      long base = StatusKb("VmRSS:");
      long hwm_reset = base;
      std::ofstream("/proc/self/clear_refs") << "5";  // reset VmHWM
      auto t = Clock::now();
      auto held = work(input, r);
      if (r->ms == 0) r->ms = ms_since(t);  // `work` may time just its core itself
      long peak = StatusKb("VmHWM:");
      input.clear();
      input.shrink_to_fit();
      malloc_trim(0);
      r->rss_mb = Mb(StatusKb("VmRSS:") - base + static_cast<long>(json.size() / 1024));
      r->peak_mb = Mb(peak - hwm_reset);
      (void)held;
    });
  };

  Result dom = run(estargz_json, [](std::string& in, Result* r) {
    auto j = std::make_shared<nlohmann::json>(nlohmann::json::parse(in));
    r->inodes = (*j)["entries"].size();
    return j;
  });
  Result es = run(estargz_json, [&](std::string& in, Result* r) {
    auto idx = BuildEstargzIndex(in, data_end, data_end + 100, lazypull::Digest(), {});
    if (!idx.ok()) {
      std::fprintf(stderr, "%s\n", idx.status().ToString().c_str());
      exit(1);
    }
    r->heap_mb = idx->MemoryUsage() / 1048576.0;
    r->inodes = idx->inode_count();
    return std::make_shared<LayerIndex>(std::move(*idx));
  });
  Result es_full = run(estargz_json, [&](std::string& in, Result* r) {
    std::string tail = EstargzTail(in, data_end);
    auto digest = lazypull::Digest::Of(in);
    in.clear();
    in.shrink_to_fit();
    SparseTailBlob blob(data_end, std::move(tail));
    auto t = std::chrono::steady_clock::now();
    auto idx = ReadEstargzIndex(blob, digest);
    if (!idx.ok()) {
      std::fprintf(stderr, "%s\n", idx.status().ToString().c_str());
      exit(1);
    }
    r->ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
    r->heap_mb = idx->MemoryUsage() / 1048576.0;
    r->inodes = idx->inode_count();
    return std::make_shared<LayerIndex>(std::move(*idx));
  });
  Result zs = run(zstd_json, [&](std::string& in, Result* r) {
    ZstdChunkedLocation loc;
    loc.manifest_offset = zstd_end + 8;
    auto idx = BuildZstdChunkedIndex(in, loc, zstd_end + 100000, lazypull::Digest(), {});
    if (!idx.ok()) {
      std::fprintf(stderr, "%s\n", idx.status().ToString().c_str());
      exit(1);
    }
    r->heap_mb = idx->MemoryUsage() / 1048576.0;
    r->inodes = idx->inode_count();
    return std::make_shared<LayerIndex>(std::move(*idx));
  });

  std::printf("%-34s %10s %12s %12s %10s %9s\n", "measurement", "time ms", "held RSS MB",
              "peak +MB", "heap MB", "inodes");
  auto row = [](const char* n, const Result& r) {
    std::printf("%-34s %10.1f %12.1f %12.1f %10.1f %9zu\n", n, r.ms, r.rss_mb, r.peak_mb, r.heap_mb,
                r.inodes);
  };
  row("baseline: nlohmann DOM parse", dom);
  row("estargz: JSON -> LayerIndex", es);
  row("estargz: blob -> LayerIndex (+gunzip,sha)", es_full);
  row("zstd:chunked: JSON -> LayerIndex", zs);
  std::printf("RATIO estargz index time / DOM parse time = %.2f\n", es.ms / dom.ms);
  std::printf("RATIO estargz index held RSS / DOM held RSS = %.2f\n", es.rss_mb / dom.rss_mb);
  bool ok = es.rss_mb <= max_index_mb && zs.rss_mb <= max_index_mb;
  std::printf("%s: index held RSS %.1f MB (estargz), %.1f MB (zstd:chunked), limit %.0f MB\n",
              ok ? "PASS" : "FAIL", es.rss_mb, zs.rss_mb, max_index_mb);
  return ok ? 0 : 1;
}
