// Writes the seed corpora for the fuzz targets into argv[1]/<target>/ (valid blobs of both
// formats and variants, their TOCs, compressed frames, tar streams, OCI documents, multipart
// bodies), built with the test blob builder, plus the hostile TOC shapes of issue 17: one chunk
// digest at two lengths, an eStargz member shared by entries and a huge innerOffset, and a
// zstd:chunked zeros chunk with a huge sparse size.
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "fetcher/format/soci/fine_index.h"
#include "fetcher/format/soci/soci_index.h"
#include "fetcher/format/soci/ztoc_builder.h"
#include "fetcher/format/soci/ztoc_serializer.h"
#include "lazypull/blob_reader.h"
#include "lazypull/digest.h"
#include "nlohmann/json.hpp"
#include "tests/elf/synthetic_elf.h"
#include "tests/format/test_blob_builder.h"

namespace {

using lazypull::Digest;
using lazypull::format::testing::TestEntry;
using nlohmann::json;

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

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
  return s;
}

// TOC entries (regular files and chunks) of file `name`, in TOC order.
std::vector<json*> ChunksOf(json& toc, const std::string& name) {
  std::vector<json*> out;
  for (json& e : toc["entries"]) {
    if (e.value("name", "") == name && (e["type"] == "reg" || e["type"] == "chunk")) {
      out.push_back(&e);
    }
  }
  return out;
}

// Issue 17 defect 1: ./dup/small (4 KiB) declares the chunkDigest of ./dup/big (64 KiB), and
// ./dup/both's second chunk (4 KiB) the digest of its first (64 KiB).
std::vector<TestEntry> DupDigestEntries() {
  return {{.name = "./dup/", .type = '5', .mode = 0755},
          {.name = "./dup/small", .data = Pattern(4096, 1)},
          {.name = "./dup/big", .data = Pattern(65536, 2)},
          {.name = "./dup/both", .data = Pattern(65536 + 4096, 3)}};
}
void ShareDigests(json& toc) {
  std::vector<json*> big = ChunksOf(toc, "./dup/big");
  std::vector<json*> small = ChunksOf(toc, "./dup/small");
  std::vector<json*> both = ChunksOf(toc, "./dup/both");
  std::string digest = Digest::Of(Pattern(65536, 2)).ToString();
  if (!big.empty()) (*big[0])["chunkDigest"] = digest;
  if (!small.empty()) (*small[0])["chunkDigest"] = digest;
  if (both.size() == 2) (*both[1])["chunkDigest"] = (*both[0])["chunkDigest"];
}

// Issue 17 defect 5: ./m/b and ./m/c point into ./m/a's gzip member (a shared member), ./m/c
// at an innerOffset near 2^62.
void ShareMember(json& toc) {
  std::vector<json*> a = ChunksOf(toc, "./m/a");
  std::vector<json*> b = ChunksOf(toc, "./m/b");
  std::vector<json*> c = ChunksOf(toc, "./m/c");
  if (a.empty() || b.empty() || c.empty()) return;
  (*b[0])["offset"] = (*a[0])["offset"];
  (*b[0])["innerOffset"] = 512;
  (*c[0])["offset"] = (*a[0])["offset"];
  (*c[0])["innerOffset"] = (uint64_t{1} << 62) - 4096;
}

// Issue 17 defect 2: /var/log/lastlog as zstd:chunked writes it, a data chunk and then one
// zeros chunk, declared 100 GiB long.
void HugeZerosChunk(json& toc) {
  constexpr uint64_t kSize = uint64_t{100} << 30;
  std::vector<json*> parts = ChunksOf(toc, "./var/log/lastlog");
  if (parts.size() != 2) return;
  (*parts[0])["size"] = kSize;
  (*parts[1])["chunkType"] = "zeros";
  (*parts[1])["chunkSize"] = kSize - (*parts[0])["chunkSize"].get<uint64_t>();
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
  // Issue 17's hostile TOC shapes, as whole blobs and as TOC JSON.
  using Es = EstargzBuildOptions;
  using Zc = ZstdChunkedBuildOptions;
  auto es_dup =
      BuildEstargz(DupDigestEntries(), Es{.chunk_size = 65536, .mutate_toc = ShareDigests});
  auto zc_dup =
      BuildZstdChunked(DupDigestEntries(), Zc{.chunk_size = 65536, .mutate_toc = ShareDigests});
  Write(out + "/estargz_fuzzer", "dup_digest", es_dup.blob);
  Write(out + "/zstd_chunked_fuzzer", "dup_digest", zc_dup.blob);
  Write(out + "/toc_json_fuzzer", "dup_digest_estargz.json", es_dup.toc_json);
  Write(out + "/toc_json_fuzzer", "dup_digest_zstd.json", zc_dup.toc_json);
  std::vector<TestEntry> members = {{.name = "./m/a", .data = Pattern(8192, 4)},
                                    {.name = "./m/b", .data = Pattern(1000, 5)},
                                    {.name = "./m/c", .data = Pattern(3000, 6)}};
  auto es_shared = BuildEstargz(members, Es{.mutate_toc = ShareMember});
  Write(out + "/estargz_fuzzer", "shared_member", es_shared.blob);
  Write(out + "/toc_json_fuzzer", "shared_member.json", es_shared.toc_json);
  std::vector<TestEntry> lastlog = {{.name = "./var/", .type = '5', .mode = 0755},
                                    {.name = "./var/log/lastlog", .data = Pattern(8192, 7)}};
  auto zc_zeros = BuildZstdChunked(lastlog, Zc{.chunk_size = 4096, .mutate_toc = HugeZerosChunk});
  Write(out + "/zstd_chunked_fuzzer", "huge_zeros", zc_zeros.blob);
  Write(out + "/toc_json_fuzzer", "huge_zeros.json", zc_zeros.toc_json);

  // Tar streams: the builder's (ustar + PAX xattrs) and a GNU long name.
  Write(out + "/tar_fuzzer", "pax", es.tar);
  std::string long_name = "./" + std::string(150, 'n');
  std::string gnu = TarHeader({.name = "././@LongLink", .type = 'L'}, long_name.size() + 1) +
                    long_name + std::string(512 - long_name.size(), '\0') +
                    TarHeader({.name = long_name.substr(0, 100)}, 5) + "hello" +
                    std::string(507, '\0') + std::string(1024, '\0');
  Write(out + "/tar_fuzzer", "gnu_long_name", gnu);

  // SOCI: the zTOC of the gzipped tar, its checkpoint blob, and span 0 to inflate (the
  // fuzzer's window is not the real one, which span 0 never reads).
  {
    const std::string gz = *lazypull::codec::GzipCompress(es.tar);
    auto blob = lazypull::NewStringBlobReader(gz);
    auto ztoc = lazypull::soci::BuildZtoc(*blob, {.span_size = 1000});
    if (ztoc.ok()) {
      Write(out + "/ztoc_fuzzer", "ztoc", *lazypull::soci::SerializeZtoc(*ztoc));
      lazypull::soci::SociIndex index;
      index.version = lazypull::soci::SociIndexVersion::kV1;
      lazypull::soci::ZtocRef ref;
      ref.ztoc.digest = Digest::Of("ztoc");
      ref.ztoc.size = 4;
      ref.layer_digest = Digest::Of(gz);
      ref.layer_media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
      ref.span_size = 1000;
      index.ztocs.push_back(ref);
      lazypull::oci::Descriptor subject;
      subject.media_type = "application/vnd.oci.image.manifest.v1+json";
      subject.digest = Digest::Of("image");
      subject.size = 5;
      index.subject = subject;
      Write(out + "/ztoc_fuzzer", "soci_index.json",
            lazypull::oci::SerializeManifest(lazypull::soci::MakeSociIndexManifest(index)));
      Write(out + "/zinfo_fuzzer", "v2_blob", std::string(1, '\0') + ztoc->checkpoints.blob());
      const auto r = ztoc->SpanCompressedRange(0);
      const uint64_t len = std::min<uint64_t>(ztoc->SpanUncompressedRange(0).length, 65535);
      std::string span = std::string(1, '\x01') + static_cast<char>(len & 0xff) +
                         static_cast<char>(len >> 8) + gz.substr(r.offset, r.length);
      Write(out + "/zinfo_fuzzer", "span", span);
      // The builder over the whole layer, with checkpoints around files of >= 1 KiB (2 blocks).
      Write(out + "/zinfo_fuzzer", "build", std::string("\x21\x02\x00", 3) + gz);
      // lazypull's fine index of the same layer: the framed record inside its zstd blob, and
      // the blob itself (DecodeFineBlob).
      auto fine =
          lazypull::soci::BuildFineIndex(*blob, {.span_size = 1000}, out + "/fine_windows.tmp");
      std::remove((out + "/fine_windows.tmp").c_str());
      if (fine.ok()) {
        Write(out + "/fine_index_fuzzer", "frame",
              *lazypull::codec::ZstdDecompress(fine->fine, {.max_output = 64 << 20}));
        Write(out + "/fine_index_fuzzer", "blob", fine->fine);
      }
    }
  }

  // OCI documents.
  std::string layer_digest = Digest::Of(zc.blob).ToString();
  std::string config =
      json{{"architecture", "amd64"},
           {"os", "linux"},
           {"config", {{"Env", {"PATH=/bin"}}}},
           {"rootfs", {{"type", "layers"}, {"diff_ids", {Digest::Of(zc.tar).ToString()}}}}}
          .dump();
  std::string manifest = json{{"schemaVersion", 2},
                              {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                              {"config",
                               {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                                {"digest", Digest::Of(config).ToString()},
                                {"size", config.size()}}},
                              {"layers",
                               {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+zstd"},
                                 {"digest", layer_digest},
                                 {"size", zc.blob.size()},
                                 {"annotations", zc.annotations}}}},
                              {"annotations", {{"org.opencontainers.image.ref.name", "v1"}}}}
                             .dump();
  std::string index =
      json{{"schemaVersion", 2},
           {"mediaType", "application/vnd.oci.image.index.v1+json"},
           {"manifests",
            {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
              {"digest", Digest::Of(manifest).ToString()},
              {"size", manifest.size()},
              {"platform", {{"os", "linux"}, {"architecture", "arm64"}, {"variant", "v8"}}}},
             {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
              {"digest", Digest::Of(manifest).ToString()},
              {"size", manifest.size()},
              {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}}
          .dump();
  Write(out + "/oci_fuzzer", "manifest.json", manifest);
  Write(out + "/oci_fuzzer", "index.json", index);
  Write(out + "/oci_fuzzer", "config.json", config);

  // multipart/byteranges bodies: piece size, blob size (LE64), body.
  auto le64 = [](uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
    return s;
  };
  std::string body =
      "preamble\r\n--BOUNDARY\r\nContent-Type: application/octet-stream\r\n"
      "Content-Range: bytes 10-14/100\r\n\r\nhello\r\n--BOUNDARY\r\n"
      "content-range: bytes 0-2/*\r\n\r\nabc\r\n--BOUNDARY--\r\nepilogue";
  Write(out + "/byteranges_fuzzer", "two_parts", std::string(1, '\x06') + le64(100) + body);
  Write(out + "/byteranges_fuzzer", "content_range",
        std::string(1, '\xff') + le64(1 << 20) + "bytes 4096-69631/1048576\n");
  // Issue 17 defect 6: LAST = 2^64 - 1 once made the length wrap to 0.
  Write(out + "/byteranges_fuzzer", "wrapping_range",
        std::string(1, '\xff') + le64(~uint64_t{0}) + "bytes 0-18446744073709551615/*\n");

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
  // .pyc: this machine's compiled standard library (python3 is a test dependency).
  for (const char* pyc : {"/usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc",
                          "/usr/lib/python3.11/__pycache__/enum.cpython-311.pyc",
                          "/usr/lib/python3.11/re/__pycache__/__init__.cpython-311.pyc"}) {
    std::string bytes = ReadPrefix(pyc, 256 << 10);
    std::string name = std::string(pyc).substr(std::string(pyc).rfind('/') + 1);
    if (!bytes.empty()) Write(out + "/pyc_fuzzer", name + std::to_string(bytes.size()), bytes);
  }
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
