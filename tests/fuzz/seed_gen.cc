// Writes the seed corpora for the fuzz targets into argv[1]/<target>/ (valid blobs of both
// formats and variants, their TOCs, and compressed frames), built with the test blob builder.
#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "tests/elf/synthetic_elf.h"
#include "tests/format/test_blob_builder.h"

namespace {

std::string ReadPrefix(const std::string& path, size_t max) {
  std::ifstream in(path, std::ios::binary);
  std::string data(max, '\0');
  in.read(data.data(), static_cast<std::streamsize>(max));
  data.resize(static_cast<size_t>(in.gcount()));
  return data;
}

// One record of elf_walk_fuzzer's image: kind, path length, payload length (LE), path, payload.
std::string Record(char kind, const std::string& path, const std::string& payload) {
  std::string r(1, kind);
  r += static_cast<char>(path.size());
  r += static_cast<char>(payload.size() & 0xff);
  r += static_cast<char>(payload.size() >> 8);
  return r + path + payload;
}

void Write(const std::string& dir, const std::string& name, const std::string& data) {
  mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/" + name, std::ios::binary) << data;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lazypull::format::testing;
  if (argc != 2) return 2;
  std::string out = argv[1];
  mkdir(out.c_str(), 0755);
  std::vector<TestEntry> e;
  e.push_back({.name = "./", .type = '5', .mode = 0755});
  e.push_back({.name = "./a/f",
               .type = '0',
               .data = std::string(3000, 'q') + "tail",
               .xattrs = {{"user.x", "y"}}});
  e.push_back({.name = "./a/z", .type = '0', .data = std::string(2000, '\0') + "z"});
  e.push_back({.name = "./a/h", .type = '1', .link = "./a/f"});
  e.push_back({.name = "./a/s", .type = '2', .link = "f"});
  e.push_back({.name = "./d/.wh.x", .type = '0'});
  e.push_back({.name = "./o/.wh..wh..opq", .type = '0'});
  e.push_back({.name = "./dev/c", .type = '3', .dev_major = 1, .dev_minor = 5});
  e.push_back({.name = "./dev/p", .type = '6'});
  auto es = BuildEstargz(e, {.chunk_size = 1000, .prioritized = 2});
  auto es_legacy = BuildEstargz(e, {.legacy_footer = true});
  auto zc = BuildZstdChunked(e, {.chunk_size = 1000});
  auto zc_legacy = BuildZstdChunked(e, {.chunk_size = 1000, .legacy = true});
  Write(out + "/estargz_fuzzer", "blob", es.blob);
  Write(out + "/estargz_fuzzer", "legacy", es_legacy.blob);
  Write(out + "/zstd_chunked_fuzzer", "current", zc.blob);
  Write(out + "/zstd_chunked_fuzzer", "legacy", zc_legacy.blob);
  Write(out + "/toc_json_fuzzer", "estargz.json", es.toc_json);
  Write(out + "/toc_json_fuzzer", "zstd.json", zc.toc_json);
  Write(out + "/codec_fuzzer", "gz", *lazypull::codec::GzipCompress("hello gzip member"));
  Write(out + "/codec_fuzzer", "zst", *lazypull::codec::ZstdCompress("hello zstd frame"));
  // The EROFS writer target builds indexes from raw choices: any bytes are a valid start.
  std::string choices;
  for (int i = 0; i < 4096; ++i) choices.push_back(static_cast<char>((i * 2654435761u) >> 13));
  Write(out + "/erofs_writer_fuzzer", "choices", choices);
  // ELF and ld.so.cache: this machine's own files (the build machine is a glibc Linux). The
  // ELF target's first byte picks the initial read size in 64-byte units.
  std::string ls = ReadPrefix("/bin/ls", 256 << 10);
  if (!ls.empty()) {
    Write(out + "/elf_fuzzer", "ls-16k", std::string(1, '\xff') + ls);
    Write(out + "/elf_fuzzer", "ls-4k", std::string(1, '\x40') + ls);
    Write(out + "/elf_fuzzer", "ls-header", std::string(1, '\x01') + ls.substr(0, 4096));
  }
  std::string busybox = ReadPrefix("/bin/busybox", 8 << 10);
  if (!busybox.empty()) Write(out + "/elf_fuzzer", "static-head", std::string(1, '\x10') + busybox);
  std::string cache = ReadPrefix("/etc/ld.so.cache", 256 << 10);
  if (!cache.empty()) {
    Write(out + "/ld_so_cache_fuzzer", "whole", cache);
    Write(out + "/ld_so_cache_fuzzer", "prefix", cache.substr(0, 4096));
  }
  // Synthetic ELF files of the other class and byte order, and a small image for the walk:
  // an executable, its interpreter behind a symlinked directory, a library whose DT_NEEDED
  // is a symlink back to itself, and a symlink loop.
  using lazypull::elf::testing::BuildElf;
  using lazypull::elf::testing::SyntheticElf;
  SyntheticElf be32;
  be32.is_64 = false;
  be32.big_endian = true;
  be32.machine = 22;
  Write(out + "/elf_fuzzer", "be32", std::string(1, '\x02') + BuildElf(be32));
  SyntheticElf app;
  app.padding = 64;
  app.interp = "/lib64/ld.so";
  app.needed = {"liba.so.1", "libmissing.so"};
  app.soname = "";
  SyntheticElf ld = app;
  ld.interp = "";
  ld.needed = {};
  ld.soname = "ld.so";
  SyntheticElf liba = ld;
  liba.needed = {"libb.so.2", "ld.so"};
  liba.soname = "liba.so.1";
  liba.runpath = "$ORIGIN/../lib:$LIB";
  std::string image = Record('F', "usr/bin/app", BuildElf(app)) + Record('L', "lib64", "usr/lib") +
                      Record('F', "usr/lib/ld.so", BuildElf(ld)) +
                      Record('F', "usr/lib/liba.so.1", BuildElf(liba)) +
                      Record('L', "usr/lib/libb.so.2", "../../usr/lib/./liba.so.1") +
                      Record('L', "loop", "/loop");
  Write(out + "/elf_walk_fuzzer", "image", image);
  return 0;
}
