#include "tests/erofs/erofs_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <random>
#include <set>

#include "fetcher/codec/zstd.h"
#include "fetcher/format/estargz_reader.h"
#include "fetcher/format/zstd_chunked_reader.h"
#include "fetcher/tar/tar_scanner.h"
#include "fmt/format.h"
#include "mount/erofs/erofs_format.h"
#include "mount/erofs/loop_device.h"
#include "mount/erofs/tar_payloads.h"
#include "nlohmann/json.hpp"

namespace lazypull::erofs_testing {
namespace {

using format::Ino;
using format::testing::TestEntry;

std::string Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

TestEntry Dir(std::string name, uint32_t mode = 0755) {
  TestEntry e;
  e.name = std::move(name);
  e.type = '5';
  e.mode = mode;
  return e;
}
TestEntry File(std::string name, std::string data, uint32_t mode = 0644) {
  TestEntry e;
  e.name = std::move(name);
  e.data = std::move(data);
  e.mode = mode;
  return e;
}

}  // namespace

std::vector<TestEntry> RichEntries() {
  std::vector<TestEntry> v;
  v.push_back(Dir("./"));
  v.push_back(Dir("etc/"));
  v.back().xattrs = {{"trusted.tag", "etc"}, {"user.color", "blue"}};
  v.push_back(File("etc/hello", "hello from erofs\n"));
  // A real VFS_CAP_REVISION_2 value (cap_net_raw=ep), as `setcap` writes it.
  v.back().xattrs = {{"user.color", "blue"},
                     {"security.capability",
                      std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8) + std::string(12, '\0')}};
  v.push_back(File("etc/empty", ""));
  v.push_back(File("etc/modes", "#!/bin/sh\n", 04755));
  v.push_back(File("bin-data", Random(200 << 10, 1), 0755));
  v.back().mtime = 1700000123;
  v.back().modtime = "2023-11-14T22:15:23.123456789Z";
  v.push_back(
      File("sparse.bin", Random(64 << 10, 2) + std::string(256 << 10, '\0') + Random(64 << 10, 3)));
  v.push_back(File("owned", "uid and gid above 65535\n", 0600));
  v.back().uid = 100000;
  v.back().gid = 200000;
  v.push_back(File("big-xattr", "x"));
  v.back().xattrs = {{"user.big", std::string(2000, 'v')}, {"user.color", "blue"}};
  TestEntry link;
  link.name = "etc/hardlink";
  link.type = '1';
  link.link = "bin-data";
  v.push_back(link);
  TestEntry sym;
  sym.name = "etc/link";
  sym.type = '2';
  sym.link = "hello";
  v.push_back(sym);
  sym.name = "long-link";
  sym.link.clear();
  for (int i = 0; i < 400; ++i) sym.link += "abc/";
  sym.link += "end";
  v.push_back(sym);
  TestEntry dev;
  dev.name = "dev/";
  dev.type = '5';
  dev.mode = 0755;
  v.push_back(dev);
  dev.type = '3';
  dev.mode = 0666;
  dev.name = "dev/null";
  dev.dev_major = 1;
  dev.dev_minor = 3;
  v.push_back(dev);
  dev.name = "dev/bigminor";
  dev.dev_major = 4;
  dev.dev_minor = 300;
  v.push_back(dev);
  dev.type = '4';
  dev.name = "dev/sda1";
  dev.dev_major = 8;
  dev.dev_minor = 1;
  v.push_back(dev);
  TestEntry fifo;
  fifo.name = "dev/fifo";
  fifo.type = '6';
  fifo.mode = 0600;
  v.push_back(fifo);
  v.push_back(Dir("gone/"));
  v.push_back(File("gone/.wh.deleted", ""));
  v.push_back(Dir("opq/"));
  v.push_back(File("opq/.wh..wh..opq", ""));
  v.push_back(File("opq/kept", "kept\n"));
  v.push_back(Dir("many/"));
  for (int i = 0; i < 400; ++i) {
    v.push_back(File(fmt::format("many/f{:03d}-{}", i, std::string(i % 50, 'n')),
                     fmt::format("file {}\n", i)));
    v.back().mtime = 1700000000 + (i % 3);
  }
  // Names that sort around "." and "..".
  v.push_back(File("many/-dash", "dash\n"));
  v.push_back(File("many/.dot", "dot\n"));
  v.push_back(File("many/\xc3\xa9t\xc3\xa9", "utf-8\n"));
  return v;
}

absl::StatusOr<TestLayer> MakeTestLayer(const std::vector<TestEntry>& entries, bool zstd_chunked) {
  TestLayer layer;
  absl::StatusOr<format::LayerIndex> index;
  if (zstd_chunked) {
    format::testing::ZstdChunkedBuildOptions o;
    o.chunk_size = 64 << 10;
    layer.built = format::testing::BuildZstdChunked(entries, o);
    layer.blob = NewStringBlobReader(layer.built.blob);
    index = format::ReadZstdChunkedIndex(*layer.blob, layer.built.annotations);
  } else {
    format::testing::EstargzBuildOptions o;
    o.chunk_size = 64 << 10;
    layer.built = format::testing::BuildEstargz(entries, o);
    layer.blob = NewStringBlobReader(layer.built.blob);
    index = format::ReadEstargzIndex(*layer.blob, layer.built.toc_digest);
  }
  if (!index.ok()) return index.status();
  layer.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  return layer;
}

std::string ZstdZerosFrame(uint64_t n) {
  std::string f("\x28\xb5\x2f\xfd", 4);
  f.push_back('\x00');                     // no content size, not single segment, no checksum
  f.push_back(static_cast<char>(7 << 3));  // window 2^(10+7) = 128 KiB
  constexpr uint64_t kBlock = 128 << 10;
  for (uint64_t done = 0; done < n;) {
    const uint64_t len = std::min(kBlock, n - done);
    done += len;
    const uint32_t header = (done == n ? 1u : 0u) | (1u << 1) | static_cast<uint32_t>(len << 3);
    f.push_back(static_cast<char>(header & 0xff));
    f.push_back(static_cast<char>((header >> 8) & 0xff));
    f.push_back(static_cast<char>((header >> 16) & 0xff));
    f.push_back('\0');  // the repeated byte
  }
  return f;
}

// sha256 of `n` zero bytes. 100 GiB's is a constant (`head -c 100G /dev/zero | sha256sum`):
// hashing it takes minutes.
Digest ZerosDigest(uint64_t n) {
  if (n == (100ull << 30)) {
    return *Digest::Parse(
        "sha256:f0b14a8da7f1c48a0846647a078b97956edd8df451a62fc4b466879aa24d4fd7");
  }
  Sha256 sha;
  const std::string zeros(1 << 20, '\0');
  for (uint64_t done = 0; done < n; done += zeros.size()) {
    sha.Update(std::string_view(zeros).substr(0, std::min<uint64_t>(zeros.size(), n - done)));
  }
  return sha.Finish();
}

absl::StatusOr<SparseLayer> MakeSparseZstdChunkedLayer(uint64_t hole) {
  constexpr uint64_t kPart = 64 << 10;
  constexpr char kModTime[] = "2023-11-14T22:13:20Z";
  SparseLayer out;
  out.head = Random(kPart, 11);
  out.tail = Random(kPart, 12);
  out.file_size = 2 * kPart + hole;
  auto zs = [](const std::string& s) { return *codec::ZstdCompress(s); };
  std::string& blob = out.layer.built.blob;
  nlohmann::json entries = nlohmann::json::array();
  std::string frame;
  for (const char* dir : {"etc/", "var/", "var/log/"}) {
    TestEntry d = Dir(dir);
    d.mtime = 1700000000;
    frame += format::testing::TarHeader(d, 0);
    entries.push_back({{"name", dir}, {"type", "dir"}, {"mode", 0755}, {"modtime", kModTime}});
  }
  // A small unchunked file, then the sparse one.
  TestEntry hello = File("etc/hello", "hello\n");
  hello.mtime = 1700000000;
  frame += format::testing::TarHeader(hello, hello.data.size());
  blob += zs(frame);
  nlohmann::json h = {{"name", "etc/hello"},
                      {"type", "reg"},
                      {"mode", 0644},
                      {"modtime", kModTime},
                      {"size", 6},
                      {"offset", blob.size()},
                      {"digest", Digest::Of(hello.data).ToString()}};
  blob += zs(hello.data);
  h["endOffset"] = blob.size();
  entries.push_back(h);
  TestEntry big = File("var/log/lastlog", "");
  big.mtime = 1700000000;
  frame =
      std::string(512 - hello.data.size(), '\0') + format::testing::TarHeader(big, out.file_size);
  blob += zs(frame);
  nlohmann::json c0 = {{"name", "var/log/lastlog"},
                       {"type", "reg"},
                       {"mode", 0644},
                       {"modtime", kModTime},
                       {"size", out.file_size},
                       {"offset", blob.size()},
                       {"chunkSize", kPart},
                       {"chunkDigest", Digest::Of(out.head).ToString()}};
  blob += zs(out.head);
  nlohmann::json c1 = {{"name", "var/log/lastlog"},
                       {"type", "chunk"},
                       {"offset", blob.size()},
                       {"chunkOffset", kPart},
                       {"chunkSize", hole},
                       {"chunkType", "zeros"},
                       {"chunkDigest", ZerosDigest(hole).ToString()}};
  blob += ZstdZerosFrame(hole);
  nlohmann::json c2 = {
      {"name", "var/log/lastlog"}, {"type", "chunk"},
      {"offset", blob.size()},     {"chunkOffset", kPart + hole},
      {"chunkSize", kPart},        {"chunkDigest", Digest::Of(out.tail).ToString()}};
  blob += zs(out.tail);
  c0["endOffset"] = blob.size();
  entries.push_back(c0);
  entries.push_back(c1);
  entries.push_back(c2);
  // The file size is a multiple of 512: no padding, then the end-of-archive blocks.
  const std::string trailer(1024, '\0');
  blob += zs(trailer);
  // The tar around the hole, for exact comparisons.
  {
    std::string before;
    for (const char* dir : {"etc/", "var/", "var/log/"}) {
      TestEntry d = Dir(dir);
      d.mtime = 1700000000;
      before += format::testing::TarHeader(d, 0);
    }
    before += format::testing::TarHeader(hello, hello.data.size()) + hello.data + frame + out.head;
    out.tar_before_hole = before;
    out.tar_after_hole = out.tail + trailer;
  }
  nlohmann::json toc = {{"version", 1}, {"entries", entries}};
  const std::string tar_split = zs("{\"type\":1}\n");
  toc["tarSplitDigest"] = Digest::Of(tar_split).ToString();
  const std::string toc_json = toc.dump();
  const std::string manifest = zs(toc_json);
  auto le64 = [](uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
    return s;
  };
  const uint64_t manifest_offset = blob.size() + 8;
  blob += *codec::ZstdSkippableFrame(manifest);
  const uint64_t ts_offset = blob.size() + 8;
  blob += *codec::ZstdSkippableFrame(tar_split);
  std::string footer = le64(manifest_offset) + le64(manifest.size()) + le64(toc_json.size()) +
                       le64(1) + le64(ts_offset) + le64(tar_split.size()) + le64(11) + "GNUlInUx";
  blob += *codec::ZstdSkippableFrame(footer);
  auto& a = out.layer.built.annotations;
  out.layer.built.toc_json = toc_json;
  out.layer.built.toc_digest = Digest::Of(manifest);
  a["io.github.containers.zstd-chunked.manifest-checksum"] = Digest::Of(manifest).ToString();
  a["io.github.containers.zstd-chunked.manifest-position"] =
      fmt::format("{}:{}:{}:1", manifest_offset, manifest.size(), toc_json.size());
  a["io.github.containers.zstd-chunked.tarsplit-position"] =
      fmt::format("{}:{}:11", ts_offset, tar_split.size());
  out.layer.blob = NewStringBlobReader(blob);
  absl::StatusOr<format::LayerIndex> index =
      format::ReadZstdChunkedIndex(*out.layer.blob, out.layer.built.annotations);
  if (!index.ok()) return index.status();
  out.layer.index = std::make_shared<const format::LayerIndex>(std::move(*index));
  return out;
}

absl::StatusOr<std::string> FileContent(const TestLayer& layer, Ino ino) {
  return format::testing::ReadFileBytes(*layer.index, *layer.blob, ino);
}

absl::StatusOr<std::string> MaterializeBlob(const TestLayer& layer,
                                            const mount::erofs::BlobLayout& layout) {
  std::string blob(layout.size, '\0');
  std::map<Ino, std::string> contents;
  for (const mount::erofs::BlobExtent& e : layout.extents) {
    auto it = contents.find(e.ino);
    if (it == contents.end()) {
      absl::StatusOr<std::string> c = FileContent(layer, e.ino);
      if (!c.ok()) return c.status();
      it = contents.emplace(e.ino, std::move(*c)).first;
    }
    std::memcpy(blob.data() + e.offset, it->second.data() + e.file_offset, e.length);
  }
  return blob;
}

std::vector<std::string> CompareImageWithIndex(const mount::erofs::CheckedImage& image,
                                               const TestLayer& layer,
                                               const mount::erofs::DeviceLayout& device,
                                               const std::string& device_bytes) {
  std::vector<std::string> diffs;
  const format::LayerIndex& index = *layer.index;
  std::set<std::string> expected_paths;
  auto diff = [&](const std::string& path, const std::string& what) {
    diffs.push_back(fmt::format("/{}: {}", path, what));
  };
  // Every name of every inode (hardlinks included), breadth-first.
  std::vector<std::pair<std::string, Ino>> names = {{"", format::kRootIno}};
  for (size_t i = 0; i < names.size(); ++i) {
    const auto [path, ino] = names[i];
    for (size_t c = 0; c < index.ChildCount(ino); ++c) {
      format::DirEntry d = index.Child(ino, c);
      names.push_back(
          {path.empty() ? std::string(d.name) : path + "/" + std::string(d.name), d.ino});
    }
  }
  for (const auto& [path, ino] : names) {
    expected_paths.insert(path);
    auto it = image.files.find(path);
    if (it == image.files.end()) {
      diff(path, "missing from the image");
      continue;
    }
    const mount::erofs::CheckedInode& f = it->second;
    const format::InodeAttr a = *index.GetAttr(ino);
    if (f.mode != a.mode) diff(path, fmt::format("mode {:o} != {:o}", f.mode, a.mode));
    if (f.uid != a.uid || f.gid != a.gid) {
      diff(path, fmt::format("owner {}:{} != {}:{}", f.uid, f.gid, a.uid, a.gid));
    }
    if (f.nlink != a.nlink) diff(path, fmt::format("nlink {} != {}", f.nlink, a.nlink));
    if (f.mtime_sec != a.mtime_sec || f.mtime_nsec != a.mtime_nsec) {
      diff(path, fmt::format("mtime {}.{} != {}.{}", f.mtime_sec, f.mtime_nsec, a.mtime_sec,
                             a.mtime_nsec));
    }
    if (f.rdev_major != a.dev_major || f.rdev_minor != a.dev_minor) {
      diff(path, fmt::format("rdev {}:{} != {}:{}", f.rdev_major, f.rdev_minor, a.dev_major,
                             a.dev_minor));
    }
    std::map<std::string, std::string> xattrs;
    for (const auto& [n, v] : index.Xattrs(ino)) xattrs.emplace(n, v);
    if (f.xattrs != xattrs) diff(path, "xattrs differ");
    if (S_ISLNK(a.mode) && f.symlink_target != index.SymlinkTarget(ino)) {
      diff(path, "symlink target differs");
    }
    if (S_ISREG(a.mode)) {
      if (f.size != a.size) diff(path, fmt::format("size {} != {}", f.size, a.size));
      const mount::erofs::FileChunks& fc = device.files[ino - 1];
      if (a.size > 0 && (f.chunk_bits != fc.chunk_bits || f.chunk_blocks != fc.blocks)) {
        diff(path, "chunk map differs from the device layout");
        continue;
      }
      absl::StatusOr<std::string> want = FileContent(layer, ino);
      if (!want.ok()) {
        diff(path, want.status().ToString());
        continue;
      }
      std::string got;
      for (size_t c = 0; c < f.chunk_blocks.size(); ++c) {
        const uint64_t off = uint64_t{c} << f.chunk_bits;
        const uint64_t len = std::min<uint64_t>(uint64_t{1} << f.chunk_bits, f.size - off);
        if (f.chunk_blocks[c] == mount::erofs::kNullBlock) {
          got.append(len, '\0');
        } else {
          const uint64_t at = uint64_t{f.chunk_blocks[c]} << image.block_bits;
          if (at + len > device_bytes.size()) {
            diff(path, "chunk beyond the device bytes");
            break;
          }
          got.append(device_bytes, at, len);
        }
      }
      if (got != *want) diff(path, "content differs");
    }
  }
  for (const auto& [path, f] : image.files) {
    if (!expected_paths.contains(path)) diff(path, "not in the index");
  }
  return diffs;
}

std::vector<std::string> CompareMountWithIndex(const std::string& dir, const TestLayer& layer) {
  std::vector<std::string> diffs;
  const format::LayerIndex& index = *layer.index;
  auto diff = [&](const std::string& path, const std::string& what) {
    diffs.push_back(fmt::format("/{}: {}", path, what));
  };
  std::vector<std::pair<std::string, Ino>> todo = {{"", format::kRootIno}};
  std::map<Ino, ino_t> st_ino_of;
  while (!todo.empty()) {
    auto [path, ino] = todo.back();
    todo.pop_back();
    const std::string full = path.empty() ? dir : dir + "/" + path;
    const format::InodeAttr a = *index.GetAttr(ino);
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) {
      diff(path, fmt::format("lstat: {}", strerror(errno)));
      continue;
    }
    if (st.st_mode != a.mode) diff(path, fmt::format("mode {:o} != {:o}", st.st_mode, a.mode));
    if (st.st_uid != a.uid || st.st_gid != a.gid) diff(path, "owner differs");
    if (st.st_nlink != a.nlink) diff(path, fmt::format("nlink {} != {}", st.st_nlink, a.nlink));
    if (st.st_mtim.tv_sec != a.mtime_sec || st.st_mtim.tv_nsec != a.mtime_nsec) {
      diff(path, fmt::format("mtime {}.{} != {}.{}", st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                             a.mtime_sec, a.mtime_nsec));
    }
    auto [it, fresh] = st_ino_of.emplace(ino, st.st_ino);
    if (!fresh && it->second != st.st_ino) diff(path, "hardlink with a different st_ino");
    if (S_ISCHR(a.mode) || S_ISBLK(a.mode)) {
      if (major(st.st_rdev) != a.dev_major || minor(st.st_rdev) != a.dev_minor) {
        diff(path, "rdev differs");
      }
    }
    std::map<std::string, std::string> want_x, got_x;
    for (const auto& [n, v] : index.Xattrs(ino)) want_x.emplace(n, v);
    char names[65536];
    ssize_t len = llistxattr(full.c_str(), names, sizeof(names));
    for (ssize_t off = 0; len > 0 && off < len; off += strlen(names + off) + 1) {
      char value[65536];
      ssize_t vlen = lgetxattr(full.c_str(), names + off, value, sizeof(value));
      if (vlen >= 0) got_x.emplace(names + off, std::string(value, vlen));
    }
    if (got_x != want_x)
      diff(path, fmt::format("xattrs differ ({} vs {})", got_x.size(), want_x.size()));
    if (S_ISLNK(a.mode)) {
      char target[8192];
      ssize_t n = readlink(full.c_str(), target, sizeof(target));
      if (n < 0 || std::string_view(target, n) != index.SymlinkTarget(ino)) {
        diff(path, "symlink target differs");
      }
    } else if (S_ISREG(a.mode)) {
      if (static_cast<uint64_t>(st.st_size) != a.size) diff(path, "size differs");
      absl::StatusOr<std::string> want = FileContent(layer, ino);
      int fd = open(full.c_str(), O_RDONLY | O_CLOEXEC);
      std::string got;
      char buf[1 << 16];
      ssize_t n;
      while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0) got.append(buf, n);
      if (fd < 0 || n < 0) diff(path, fmt::format("read: {}", strerror(errno)));
      if (fd >= 0) close(fd);
      if (!want.ok() || got != *want) diff(path, "content differs");
    } else if (S_ISDIR(a.mode)) {
      std::set<std::string> want_names, got_names;
      for (size_t c = 0; c < index.ChildCount(ino); ++c) {
        format::DirEntry d = index.Child(ino, c);
        want_names.insert(std::string(d.name));
        todo.push_back(
            {path.empty() ? std::string(d.name) : path + "/" + std::string(d.name), d.ino});
      }
      DIR* d = opendir(full.c_str());
      while (d != nullptr) {
        dirent* e = readdir(d);
        if (e == nullptr) break;
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
          got_names.insert(e->d_name);
        }
      }
      if (d != nullptr) closedir(d);
      if (got_names != want_names) diff(path, "directory entries differ");
    }
  }
  return diffs;
}

absl::StatusOr<std::vector<uint64_t>> TarPayloadOffsets(const TestLayer& layer) {
  auto tar = NewStringBlobReader(layer.built.tar);
  absl::StatusOr<tar::TarIndex> scanned = tar::ScanTar(*tar);
  if (!scanned.ok()) return scanned.status();
  return mount::erofs::MatchTarPayloads(*layer.index, *scanned);
}

size_t OwnedLoopDevices(const std::string& owner) {
  size_t n = 0;
  for (const auto& d : mount::erofs::ListLoopDevices()) {
    n += mount::erofs::IsOwnedLoopDevice(d, owner) ? 1 : 0;
  }
  return n;
}

size_t LoopDevicesBackedUnder(const std::string& dir) {
  size_t n = 0;
  for (const auto& d : mount::erofs::ListLoopDevices()) {
    n += d.backing_file.rfind(dir + "/", 0) == 0 ? 1 : 0;
  }
  return n;
}

}  // namespace lazypull::erofs_testing
