#include "tests/format/test_blob_builder.h"

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/time/time.h"
#include "fetcher/codec/gzip.h"
#include "fetcher/codec/zstd.h"
#include "fmt/format.h"

namespace lazypull::format::testing {
namespace {

void PutOctal(char* field, size_t len, uint64_t v) {
  std::string s = fmt::format("{:0{}o}", v, len - 1);
  std::memcpy(field, s.data(), std::min(s.size(), len - 1));
}

std::string Block(const std::string& name, char type, uint64_t size, const TestEntry& e) {
  char h[512];
  std::memset(h, 0, sizeof(h));
  std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
  PutOctal(h + 100, 8, e.mode & 07777);
  PutOctal(h + 108, 8, e.uid);
  PutOctal(h + 116, 8, e.gid);
  PutOctal(h + 124, 12, size);
  PutOctal(h + 136, 12, static_cast<uint64_t>(e.mtime));
  h[156] = type;
  std::memcpy(h + 157, e.link.data(), std::min<size_t>(e.link.size(), 100));
  std::memcpy(h + 257,
              "ustar\0"
              "00",
              8);
  PutOctal(h + 329, 8, e.dev_major);
  PutOctal(h + 337, 8, e.dev_minor);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  PutOctal(h + 148, 7, sum);
  return std::string(h, 512);
}

std::string Pad(uint64_t size) { return std::string((512 - size % 512) % 512, '\0'); }

std::string ModTime(const TestEntry& e) {
  if (!e.modtime.empty()) return e.modtime;
  return absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(e.mtime), absl::UTCTimeZone());
}

std::string TypeName(char t) {
  switch (t) {
    case '0':
      return "reg";
    case '1':
      return "hardlink";
    case '2':
      return "symlink";
    case '3':
      return "char";
    case '4':
      return "block";
    case '5':
      return "dir";
    case '6':
      return "fifo";
  }
  return "unknown";
}

nlohmann::json BaseEntry(const TestEntry& e) {
  nlohmann::json j;
  j["name"] = e.name;
  j["type"] = TypeName(e.type);
  j["modtime"] = ModTime(e);
  j["mode"] = e.mode;
  if (e.uid) j["uid"] = e.uid;
  if (e.gid) j["gid"] = e.gid;
  if (!e.link.empty()) j["linkName"] = e.link;
  if (e.type == '3' || e.type == '4') {
    j["devMajor"] = e.dev_major;
    j["devMinor"] = e.dev_minor;
  }
  if (e.type == '0' && !e.data.empty()) j["size"] = e.data.size();
  if (!e.xattrs.empty()) {
    nlohmann::json x = nlohmann::json::object();
    for (const auto& [k, v] : e.xattrs) x[k] = absl::Base64Escape(v);
    j["xattrs"] = x;
  }
  return j;
}

std::string Gz(const std::string& s) { return *codec::GzipCompress(s); }
std::string Zs(const std::string& s) { return *codec::ZstdCompress(s); }

}  // namespace

std::string TarHeader(const TestEntry& e, uint64_t size) {
  std::string out;
  if (!e.xattrs.empty()) {
    std::string pax;
    for (const auto& [k, v] : e.xattrs) {
      std::string rec = " SCHILY.xattr." + k + "=" + v + "\n";
      size_t n = rec.size();
      size_t total = n + std::to_string(n).size();
      if (std::to_string(total).size() != std::to_string(n).size()) ++total;
      pax += std::to_string(total) + rec;
    }
    TestEntry ph;
    ph.mode = 0644;
    out += Block("PaxHeaders/" + e.name.substr(0, 80), 'x', pax.size(), ph) + pax + Pad(pax.size());
  }
  return out + Block(e.name, e.type, size, e);
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1103515245 + 12345;
    s[i] = static_cast<char>(seed >> 16);
  }
  return s;
}

std::vector<TestEntry> SampleLayerEntries() {
  std::vector<TestEntry> e;
  e.push_back({.name = "./", .type = '5', .mode = 0755});
  e.push_back({.name = "./etc/", .type = '5', .mode = 0755});
  e.push_back({.name = "./etc/hosts",
               .type = '0',
               .data = "127.0.0.1 localhost\n",
               .uid = 7,
               .gid = 8,
               .xattrs = {{"user.note", "hi"}}});
  e.push_back({.name = "./bin/big", .type = '0', .data = Pattern(300000, 1), .mode = 0755});
  e.push_back({.name = "./bin/empty", .type = '0'});
  e.push_back({.name = "./bin/link", .type = '1', .link = "./bin/big"});
  e.push_back({.name = "./bin/sh", .type = '2', .link = "busybox", .mode = 0777});
  e.push_back({.name = "./dev/null", .type = '3', .mode = 0666, .dev_major = 1, .dev_minor = 3});
  e.push_back({.name = "./dev/fifo", .type = '6'});
  e.push_back({.name = "./old/.wh.removed", .type = '0'});
  e.push_back({.name = "./opq/.wh..wh..opq", .type = '0'});
  e.push_back({.name = "./zzz name with spaces ü", .type = '0', .data = "x"});
  return e;
}

BuiltBlob BuildEstargz(const std::vector<TestEntry>& input, const EstargzBuildOptions& o) {
  std::vector<TestEntry> entries;
  TestEntry landmark;
  landmark.type = '0';
  landmark.data = std::string(1, '\x0f');
  if (o.prioritized < 0) {
    landmark.name = ".no.prefetch.landmark";
    entries.push_back(landmark);
  }
  for (size_t i = 0; i < input.size(); ++i) {
    if (o.prioritized >= 0 && static_cast<int>(i) == o.prioritized) {
      landmark.name = ".prefetch.landmark";
      entries.push_back(landmark);
    }
    entries.push_back(input[i]);
  }
  if (o.prioritized >= static_cast<int>(input.size())) {
    landmark.name = ".prefetch.landmark";
    entries.push_back(landmark);
  }
  BuiltBlob out;
  std::string member;  // uncompressed bytes of the open gzip member
  nlohmann::json toc_entries = nlohmann::json::array();
  for (const TestEntry& e : entries) {
    std::string hdr = TarHeader(e, e.type == '0' ? e.data.size() : 0);
    member += hdr;
    out.tar += hdr;
    nlohmann::json j = BaseEntry(e);
    if (e.type == '0' && !e.data.empty()) {
      j["digest"] = Digest::Of(e.data).ToString();
      bool chunked = e.data.size() > o.chunk_size;
      if (chunked) j["chunkSize"] = o.chunk_size;
      for (uint64_t off = 0; off < e.data.size(); off += o.chunk_size) {
        out.blob += Gz(member);
        std::string piece = e.data.substr(off, o.chunk_size);
        nlohmann::json c = off == 0 ? j : nlohmann::json::object();
        if (off != 0) {
          c["name"] = e.name;
          c["type"] = "chunk";
          c["chunkOffset"] = off;
          c["chunkSize"] = piece.size();
        }
        c["offset"] = out.blob.size();
        c["chunkDigest"] = Digest::Of(piece).ToString();
        toc_entries.push_back(c);
        member = piece;
      }
      member += Pad(e.data.size());
      out.tar += e.data + Pad(e.data.size());
    } else {
      toc_entries.push_back(j);
    }
  }
  out.blob += Gz(member);
  nlohmann::json toc = {{"version", 1}, {"entries", toc_entries}};
  if (o.mutate_toc) o.mutate_toc(toc);
  out.toc_json = toc.dump(1, '\t');
  out.toc_digest = Digest::Of(out.toc_json);
  uint64_t toc_offset = out.blob.size();
  TestEntry te;
  te.name = "stargz.index.json";
  te.mode = 0644;
  te.mtime = 0;
  std::string toc_tar = Block(te.name, '0', out.toc_json.size(), te) + out.toc_json +
                        Pad(out.toc_json.size()) + std::string(1024, '\0');
  out.blob += Gz(toc_tar);
  std::string field = fmt::format("{:016x}STARGZ", toc_offset);
  std::string footer = "\x1f\x8b\x08\x04" + std::string(4, '\0') + std::string("\x00\xff", 2);
  if (o.legacy_footer) {
    footer += std::string("\x16\x00", 2) + field;
  } else {
    footer += std::string("\x1a\x00SG\x16\x00", 6) + field;
  }
  footer += std::string("\x01\x00\x00\xff\xff", 5) + std::string(8, '\0');
  out.blob += footer;
  out.tar += std::string(1024, '\0');
  out.annotations["containerd.io/snapshot/stargz/toc.digest"] = out.toc_digest.ToString();
  return out;
}

BuiltBlob BuildZstdChunked(const std::vector<TestEntry>& entries,
                           const ZstdChunkedBuildOptions& o) {
  BuiltBlob out;
  std::string frame;
  nlohmann::json toc_entries = nlohmann::json::array();
  for (const TestEntry& e : entries) {
    std::string hdr = TarHeader(e, e.type == '0' ? e.data.size() : 0);
    frame += hdr;
    out.tar += hdr;
    nlohmann::json j = BaseEntry(e);
    // zstd:chunked modtimes carry nanoseconds.
    j["modtime"] = e.modtime.empty() ? ModTime(e) : e.modtime;
    if (e.type == '0' && !e.data.empty()) {
      out.blob += Zs(frame);
      frame.clear();
      j["digest"] = Digest::Of(e.data).ToString();
      std::vector<nlohmann::json> parts;
      bool chunked = e.data.size() > o.chunk_size;
      for (uint64_t off = 0; off < e.data.size(); off += o.chunk_size) {
        std::string piece = e.data.substr(off, o.chunk_size);
        nlohmann::json c = off == 0 ? j : nlohmann::json{{"type", "chunk"}, {"name", e.name}};
        c["offset"] = out.blob.size();
        if (chunked) {
          if (off != 0) c["chunkOffset"] = off;
          c["chunkSize"] = piece.size();
          c["chunkDigest"] = Digest::Of(piece).ToString();
          if (piece.find_first_not_of('\0') == std::string::npos) c["chunkType"] = "zeros";
        }
        out.blob += Zs(piece);
        parts.push_back(c);
      }
      parts[0]["endOffset"] = out.blob.size();
      for (auto& p : parts) toc_entries.push_back(p);
      frame = Pad(e.data.size());
      out.tar += e.data + Pad(e.data.size());
    } else {
      toc_entries.push_back(j);
    }
  }
  frame += std::string(1024, '\0');
  out.tar += std::string(1024, '\0');
  out.blob += Zs(frame);
  nlohmann::json toc = {{"version", 1}, {"entries", toc_entries}};
  std::string tar_split = Zs("{\"type\":1}\n");
  if (!o.legacy) toc["tarSplitDigest"] = Digest::Of(tar_split).ToString();
  if (o.mutate_toc) o.mutate_toc(toc);
  out.toc_json = toc.dump();
  std::string manifest = Zs(out.toc_json);
  out.toc_digest = Digest::Of(manifest);
  uint64_t manifest_offset = out.blob.size() + 8;
  out.blob += *codec::ZstdSkippableFrame(manifest);
  auto le64 = [](uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
    return s;
  };
  std::string footer =
      le64(manifest_offset) + le64(manifest.size()) + le64(out.toc_json.size()) + le64(1);
  std::string position =
      fmt::format("{}:{}:{}:1", manifest_offset, manifest.size(), out.toc_json.size());
  if (o.legacy) {
    footer += "GnUlInUx";
    out.annotations["io.containers.zstd-chunked.manifest-checksum"] = out.toc_digest.ToString();
    out.annotations["io.containers.zstd-chunked.manifest-position"] = position;
  } else {
    uint64_t ts_offset = out.blob.size() + 8;
    out.blob += *codec::ZstdSkippableFrame(tar_split);
    footer += le64(ts_offset) + le64(tar_split.size()) + le64(11) + "GNUlInUx";
    out.annotations["io.github.containers.zstd-chunked.manifest-checksum"] =
        out.toc_digest.ToString();
    out.annotations["io.github.containers.zstd-chunked.manifest-position"] = position;
    out.annotations["io.github.containers.zstd-chunked.tarsplit-position"] =
        fmt::format("{}:{}:11", ts_offset, tar_split.size());
  }
  out.blob += *codec::ZstdSkippableFrame(footer);
  return out;
}

}  // namespace lazypull::format::testing

#include "fetcher/format/chunk_decoder.h"

namespace lazypull::format::testing {
absl::StatusOr<std::string> ReadFileBytes(const LayerIndex& index, BlobReader& blob, Ino ino) {
  std::string out;
  for (const Chunk& c : index.Chunks(ino)) {
    std::string compressed;
    if (c.compression != ChunkCompression::kZeros) {
      auto r = blob.ReadAt(c.compressed_offset, c.compressed_length);
      if (!r.ok()) return r.status();
      compressed = std::move(*r);
    }
    auto data = DecodeChunk(c, compressed);
    if (!data.ok()) return data.status();
    out += *data;
  }
  return out;
}
}  // namespace lazypull::format::testing
