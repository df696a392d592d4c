// unchunked_read_bench: peak RSS growth and time to first byte of single reads from a file
// stored as ONE huge chunk (legal in eStargz: no chunkSize), against the same reads from a
// copy chunked at 4 MiB, all through LayerReader with a fresh chunk cache per read (cold).
// Baseline for the time: one cold 4 MiB chunk fetch of the chunked copy.
//
//   unchunked_read_bench [--sizes_gib 2,8] [--work_dir /var/tmp/...]
//
// Blobs are gzip members written by zlib in a streaming way (the unchunked file is zeros, so
// gigabytes cost megabytes); the chunked copy holds position-dependent bytes so its chunks do
// not collapse into one in the content-addressed cache. Prints one JSON line per read and a
// summary with the targets: peak RSS growth <= 64 MB for any read; chunked first byte <= 2x
// one 4 MiB chunk fetch.
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "fetcher/cache/chunk_cache.h"
#include "fetcher/format/layer_index_builder.h"
#include "fetcher/layer_reader/layer_reader.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"
#include "nlohmann/json.hpp"

namespace lazypull {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "unchunked_read_bench: %s\n", what.c_str());
  std::exit(1);
}

uint64_t StatusBytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(std::strlen(key))) << 10;
  }
  return 0;
}
void ResetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Bytes of the chunked copy at `pos` (distinct per 4 KiB block).
inline char ChunkedByte(uint64_t pos) {
  return static_cast<char>((pos >> 12) * 131 + (pos & 4095) * 7);
}

// Appends one gzip member holding `size` bytes from `byte(pos)` to `out`; returns its length
// and sets *digest to the sha256 of the bytes.
uint64_t WriteMember(std::FILE* out, uint64_t first, uint64_t size, bool zeros, Digest* digest) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) Die("zlib");
  Sha256 sha;
  std::vector<char> in(1 << 20), outbuf(1 << 20);
  uint64_t written = 0;
  for (uint64_t done = 0; done < size || z.avail_in > 0;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(in.size(), size - done));
    for (size_t i = 0; i < n; ++i) in[i] = zeros ? 0 : ChunkedByte(first + done + i);
    sha.Update(std::string_view(in.data(), n));
    done += n;
    z.next_in = reinterpret_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(n);
    const int flush = done == size ? Z_FINISH : Z_NO_FLUSH;
    int rc;
    do {
      z.next_out = reinterpret_cast<Bytef*>(outbuf.data());
      z.avail_out = static_cast<uInt>(outbuf.size());
      rc = deflate(&z, flush);
      const size_t have = outbuf.size() - z.avail_out;
      if (std::fwrite(outbuf.data(), 1, have, out) != have) Die("write blob");
      written += have;
    } while (z.avail_out == 0);
    if (flush == Z_FINISH && rc == Z_STREAM_END) break;
  }
  deflateEnd(&z);
  *digest = sha.Finish();
  return written;
}

struct TestLayer {
  std::string blob_path;
  std::shared_ptr<const format::LayerIndex> index;
};

TestLayer BuildLayer(const std::string& dir, uint64_t size, uint64_t chunk) {
  const bool zeros = chunk >= size;
  TestLayer t;
  t.blob_path = dir + (zeros ? "/unchunked-" : "/chunked-") + std::to_string(size >> 30) + "g";
  std::FILE* f = std::fopen(t.blob_path.c_str(), "wb");
  if (f == nullptr) Die("create " + t.blob_path);
  std::vector<format::Chunk> chunks;
  uint64_t offset = 0;
  for (uint64_t pos = 0; pos < size; pos += chunk) {
    format::Chunk c;
    c.compression = format::ChunkCompression::kGzipMember;
    c.compressed_offset = offset;
    c.file_offset = pos;
    c.length = std::min(chunk, size - pos);
    Digest d;
    c.compressed_length = WriteMember(f, pos, c.length, zeros, &d);
    for (int k = 0; k < 32; ++k) c.digest[k] = std::stoi(d.hex().substr(2 * k, 2), nullptr, 16);
    c.has_digest = true;
    offset += c.compressed_length;
    chunks.push_back(c);
  }
  std::fclose(f);
  format::LayerIndexBuilder b(format::LayerFormat::kEstargz, {});
  format::EntryMeta meta;
  meta.permissions = 0644;
  if (!b.AddRegular("f", meta, size, chunks).ok()) Die("index");
  auto index = b.Finish(Digest::Of("toc"), offset, offset);
  if (!index.ok()) Die(index.status().ToString());
  t.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  return t;
}

// One cold read (fresh cache and reader): seconds to the first byte and peak RSS growth.
nlohmann::json ColdRead(const TestLayer& t, const std::string& work, uint64_t offset, size_t n,
                        const std::string& what) {
  fs::remove_all(work + "/cache");
  CacheConfig cc;
  cc.dir = work + "/cache";
  cc.max_bytes = 64ull << 30;
  auto cache = ChunkCache::Open(cc);
  if (!cache.ok()) Die(cache.status().ToString());
  auto blob = NewFileBlobReader(t.blob_path);
  if (!blob.ok()) Die(blob.status().ToString());
  LayerReaderOptions o;
  o.prefetch = false;
  o.background_fetch = false;
  o.readahead_bytes = 0;
  o.readahead_window = 0;
  o.fetch_timeout = std::chrono::minutes(10);
  auto reader = LayerReader::Create(what, t.index, std::shared_ptr<BlobReader>(std::move(*blob)),
                                    cache->get(), o);
  if (!reader.ok()) Die(reader.status().ToString());
  std::vector<char> buf(n);
  const uint64_t rss = StatusBytes("VmRSS:");
  ResetPeak();
  const auto start = Clock::now();
  auto got = (*reader)->Read(*t.index->LookupPath("f"), offset, buf.data(), n);
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (!got.ok()) Die(got.status().ToString());
  const uint64_t peak = StatusBytes("VmHWM:");
  return {{"bench", "cold_read"},
          {"file", what},
          {"offset", offset},
          {"bytes", n},
          {"seconds_to_first_byte", secs},
          {"peak_rss_growth_MB", (peak > rss ? peak - rss : 0) / 1048576.0}};
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) {
  using namespace lazypull;  // NOLINT(build/namespaces)
  CLI::App app{"unchunked vs chunked cold reads: peak RSS growth and time to first byte"};
  std::vector<uint64_t> sizes_gib = {2, 8};
  std::string work_dir = "/var/tmp/lazypull-unchunked-bench";
  app.add_option("--sizes_gib", sizes_gib, "file sizes in GiB")->delimiter(',');
  app.add_option("--work_dir", work_dir, "blobs and cache (needs disk: ~2x the largest size)");
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(work_dir);
  double chunk_fetch = 0, worst_rss = 0, worst_chunked_ttfb = 0;
  for (uint64_t gib : sizes_gib) {
    const uint64_t size = gib << 30;
    TestLayer unchunked = BuildLayer(work_dir, size, size);
    TestLayer chunked = BuildLayer(work_dir, size, 4 << 20);
    if (chunk_fetch == 0) {
      // Baseline: one cold 4 MiB chunk fetch (best of 3).
      for (int i = 0; i < 3; ++i) {
        double s = ColdRead(chunked, work_dir, 0, 4 << 20, "baseline")["seconds_to_first_byte"];
        chunk_fetch = chunk_fetch == 0 ? s : std::min(chunk_fetch, s);
      }
    }
    for (const auto* t : {&unchunked, &chunked}) {
      for (uint64_t off : {uint64_t{0}, size / 2, size - 1}) {
        const std::string what =
            (t == &unchunked ? "unchunked-" : "chunked4m-") + std::to_string(gib) + "GiB";
        nlohmann::json j = ColdRead(*t, work_dir, off, 1, what);
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
        worst_rss = std::max(worst_rss, j["peak_rss_growth_MB"].get<double>());
        if (t == &chunked) {
          worst_chunked_ttfb =
              std::max(worst_chunked_ttfb, j["seconds_to_first_byte"].get<double>());
        }
      }
    }
    fs::remove(unchunked.blob_path);
    fs::remove(chunked.blob_path);
  }
  fs::remove_all(work_dir + "/cache");
  nlohmann::json summary = {
      {"bench", "summary"},
      {"one_4MiB_chunk_fetch_seconds", chunk_fetch},
      {"worst_peak_rss_growth_MB", worst_rss},
      {"rss_target_MB", 64},
      {"worst_chunked_first_byte_over_one_chunk_fetch", worst_chunked_ttfb / chunk_fetch},
      {"chunked_target_ratio", 2.0}};
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}
