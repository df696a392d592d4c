// convert_bench: throughput of the layer writers (MB/s of uncompressed tar input) against the
// stock compressors on the same tar in the same run.
//
// Builds one tar from --source_dir plus --random_mb of incompressible data, then times, each
// --repeat times (best run kept): `gzip -c TAR > /dev/null`, `zstd -q -c TAR > /dev/null`,
// and in-process tar::ScanTar + WriteEstargz / WriteZstdChunked into a scratch file. Prints
// one JSON line per format with both throughputs and ours/baseline as "ratio" (> 1 = faster
// than the baseline tool).
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include "CLI/CLI.hpp"
#include "fetcher/convert/blob_sink.h"
#include "fetcher/convert/estargz_writer.h"
#include "fetcher/convert/zstd_chunked_writer.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace lazypull {
namespace {

struct Options {
  std::string source_dir = "/usr/lib/python3.11";
  int random_mb = 32;
  int repeat = 3;
  int gzip_level = 6;
  int zstd_level = 3;
};

// Best wall time in seconds of `repeat` runs of `fn` (which returns false on failure).
double BestSeconds(int repeat, const std::function<bool()>& fn) {
  double best = 1e30;
  for (int i = 0; i < repeat; ++i) {
    auto start = std::chrono::steady_clock::now();
    if (!fn()) {
      fprintf(stderr, "convert_bench: run failed\n");
      exit(1);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, s);
  }
  return best;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"eStargz / zstd:chunked conversion throughput vs gzip / zstd"};
  app.add_option("--source_dir", o.source_dir, "Directory tarred as the layer");
  app.add_option("--random_mb", o.random_mb, "MiB of random data added to the layer");
  app.add_option("--repeat", o.repeat, "Runs per measurement (best kept)");
  app.add_option("--gzip_level", o.gzip_level, "Level for gzip -c and eStargz");
  app.add_option("--zstd_level", o.zstd_level, "Level for zstd -c and zstd:chunked");
  CLI11_PARSE(app, argc, argv);

  char templ[] = "/tmp/lazypull-convert-bench-XXXXXX";
  if (mkdtemp(templ) == nullptr) return 1;
  const std::string dir = templ;
  const std::string tar = dir + "/layer.tar";
  std::string build = fmt::format(
      "set -e; mkdir -p {0}/src; cp -a '{1}' {0}/src/; head -c {2}M /dev/urandom > "
      "{0}/src/random.bin; tar -C {0}/src -cf {3} .",
      dir, o.source_dir, o.random_mb, tar);
  if (system(build.c_str()) != 0) return 1;
  const double mb = std::filesystem::file_size(tar) / 1e6;

  auto tool = [&](const std::string& cmd) {
    return BestSeconds(o.repeat, [&] { return system(cmd.c_str()) == 0; });
  };
  const double gzip_s =
      tool(fmt::format("gzip -{} -c {} > /dev/null", std::min(o.gzip_level, 9), tar));
  const double zstd_s = tool(fmt::format("zstd -q -{} -c {} > /dev/null", o.zstd_level, tar));

  auto ours = [&](bool estargz) {
    return BestSeconds(o.repeat, [&] {
      auto reader = NewFileBlobReader(tar);
      if (!reader.ok()) return false;
      auto index = tar::ScanTar(**reader);
      if (!index.ok()) return false;
      auto sink = convert::NewFileBlobSink(dir + "/out");
      if (!sink.ok()) return false;
      if (estargz) {
        convert::EstargzOptions eo;
        eo.gzip_level = o.gzip_level;
        return convert::WriteEstargz(**reader, *index, eo, **sink).ok();
      }
      convert::ZstdChunkedOptions zo;
      zo.zstd_level = o.zstd_level;
      return convert::WriteZstdChunked(**reader, *index, zo, **sink).ok();
    });
  };
  const double esgz_s = ours(true);
  const double zchunk_s = ours(false);

  auto line = [&](const char* format, double ours_s, const char* baseline, double base_s) {
    nlohmann::json j = {{"bench", "convert"},      {"format", format},
                        {"input_mb", mb},          {"ours_mb_per_s", mb / ours_s},
                        {"baseline", baseline},    {"baseline_mb_per_s", mb / base_s},
                        {"ratio", base_s / ours_s}};
    printf("%s\n", j.dump().c_str());
  };
  line("estargz", esgz_s, "gzip -c", gzip_s);
  line("zstd:chunked", zchunk_s, "zstd -c", zstd_s);
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace lazypull

int main(int argc, char** argv) { return lazypull::Main(argc, argv); }
